import Testing
import LoRAFuse
import LoRAFuseVerification
import LoRAFuseBackends
@testable import LoRAFuseCPU
import LoRAFuseVulkan

/// Matmuls whose weight is a GGUF block type, on every backend: `x · Wᵀ` within 1e-4 of the
/// float64 product on the dequantized weight, at odd row and column counts. The weights are
/// random blocks (`SeededRandom.blocks`); their values are what `GGMLType.dequantize` gives,
/// which GGUFTests checks bit for bit against the `gguf` package.
@Suite struct QuantizedMatmulTests {
    static let types = DType.allCases.filter(\.isBlockQuantized)

    static func graph(_ weight: HostTensor, rows: Int) throws -> Graph {
        var graph = Graph()
        let x = graph.input("x", [1, rows, weight.shape[1]])
        graph.markOutput(try graph.matmul(x, graph.parameter("w", weight), transposeB: true))
        return graph
    }

    @Test(arguments: types) func matchesFloat64OnTheDequantizedWeight(_ dtype: DType) throws {
        var random = SeededRandom(seed: 2701)
        let k = 3 * dtype.blockElements, n = 37, m = 13
        let weight = random.blocks([n, k], dtype: dtype)
        let graph = try Self.graph(weight, rows: m)
        let inputs = ["x": random.tensor([1, m, k])]
        let expected = try ReferenceEvaluator.evaluate(graph, inputs: inputs)[0].values
        #expect(expected.contains { $0 != 0 } && expected.allSatisfy(\.isFinite))
        for backend in BackendsUnderTest.all {
            let actual = try backend.execute(graph, inputs: inputs).outputs[0].floats()
            let error = relativeError(actual: actual, expected: expected)
            #expect(error <= 1e-4, "\(dtype.name) on \(BackendsUnderTest.label(backend)): relative error \(error)")
        }
    }

    /// The CPU's AVX-512 dequantization gives the portable routines' values bit for bit
    /// (many blocks, so every code path of each type is hit).
    @Test(.enabled(if: QuantizedRows.vectorised), arguments: types)
    func vectorisedDequantizationIsBitExact(_ dtype: DType) throws {
        var random = SeededRandom(seed: 2705)
        let tensor = random.blocks([41, 2 * 256], dtype: dtype, scale: 4)
        let count = tensor.elementCount
        var fast = [Float](repeating: .nan, count: count), portable = [Float](repeating: .nan, count: count)
        tensor.withUnsafeBytes { bytes in
            QuantizedRows.dequantize(bytes.baseAddress!, dtype: dtype, count: count, into: &fast, vectorised: true)
            QuantizedRows.dequantize(bytes.baseAddress!, dtype: dtype, count: count, into: &portable, vectorised: false)
        }
        let differing = zip(fast, portable).filter { $0.bitPattern != $1.bitPattern }.count
        #expect(differing == 0, "\(dtype.name): \(differing) of \(count) values differ")
        #expect(Set(portable).count > 100)
    }

    /// A cast is how a graph gets a block weight's float values (a LoRA merge reads the base
    /// so): every backend widens the blocks as the reference does, bit for bit.
    @Test(arguments: types) func castWidensBlocksAsTheReferenceDoes(_ dtype: DType) throws {
        var random = SeededRandom(seed: 2702)
        let weight = random.blocks([3, 2 * dtype.blockElements], dtype: dtype)
        var graph = Graph()
        graph.markOutput(try graph.cast(graph.parameter("w", weight), to: .float32))
        for backend in BackendsUnderTest.all {
            let actual = try backend.execute(graph, inputs: [:]).outputs[0].floats()
            let differing = zip(actual, weight.floats()).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0 && actual.count == weight.elementCount, "\(dtype.name) on \(BackendsUnderTest.label(backend)): \(differing) differ")
        }
    }

    /// Every GGUF type maps to the DType of ggml's name, block types back to their layout.
    @Test func ggufTypesMapToDTypes() {
        for type in GGMLType.allCases {
            let dtype = DType(type)
            #expect(dtype.name == type.description)
            #expect(dtype.blockFormat == (type.blockElements > 1 ? type : nil), "\(type)")
            #expect(dtype.byteCount(elements: 256) == type.byteCount(elements: 256), "\(type)")
        }
    }

    @Test func blockWeightsMustBeTransposedLinearsOfWholeBlocks() throws {
        var random = SeededRandom(seed: 2703)
        var graph = Graph()
        let x = graph.input("x", [4, 64])
        let weight = graph.parameter("w", random.blocks([64, 64], dtype: .q8_0))
        #expect(throws: GraphError.self) { _ = try graph.matmul(x, weight) }
        #expect((try? graph.matmul(x, weight, transposeB: true)) != nil)
    }

    /// Embedding rows of a block table, gathered and dequantized, whole and past the binding
    /// limit (one window of rows at a time), equal the dequantized rows exactly.
    @Test(arguments: types) func blockTablesAreGathered(_ dtype: DType) throws {
        var random = SeededRandom(seed: 2706)
        let table = random.blocks([97, 2 * dtype.blockElements], dtype: dtype)
        var graph = Graph()
        let ids = graph.input("ids", [1, 3], .int64)
        graph.markOutput(try graph.embedding(table: graph.parameter("table", table), ids: ids))
        let inputs = ["ids": HostTensor(shape: [1, 3], dtype: .int64, values: [5, 96, 42])]
        let expected = try ReferenceEvaluator.evaluate(graph, inputs: inputs)[0].values
        var backends = BackendsUnderTest.all
        #if canImport(CVulkan)
        // The table (not the 3 output rows) past the lowered binding limit: gathered by windows.
        let limit = max(table.byteCount / 3, 3 * table.shape[1] * 4 + 64)
        #expect(table.byteCount > limit)
        if BackendsUnderTest.vulkanTestsEnabled { backends.append(try VulkanBackend(bindingLimit: limit)) }
        #endif
        for backend in backends {
            let actual = try backend.execute(graph, inputs: inputs).outputs[0].floats()
            #expect(relativeError(actual: actual, expected: expected) == 0, "\(dtype.name) on \(BackendsUnderTest.label(backend))")
        }
    }

    /// Weights past the binding limit are bound a window of whole rows at a time, each window
    /// starting at an aligned byte (block rows are not element-addressable).
    @Test(.enabled(if: BackendsUnderTest.vulkanTestsEnabled), arguments: types)
    func vulkanSplitsBlockWeightsPastTheBindingLimit(_ dtype: DType) throws {
        var random = SeededRandom(seed: 2704)
        let k = (dtype.blockElements == 32 ? 8 : 2) * dtype.blockElements, n = 75, m = 11
        let weight = random.blocks([n, k], dtype: dtype)
        let graph = try Self.graph(weight, rows: m)
        let inputs = ["x": random.tensor([1, m, k])]
        let expected = try ReferenceEvaluator.evaluate(graph, inputs: inputs)[0].values
        for variant in [VulkanBackend.MatmulVariant.registers, .tiled] {
            let vulkan = try VulkanBackend(matmulVariant: variant, bindingLimit: 8 << 10)
            #expect(weight.byteCount > 8 << 10 && m * k * 4 > 8 << 10)
            let actual = try vulkan.execute(graph, inputs: inputs).outputs[0].floats()
            let error = relativeError(actual: actual, expected: expected)
            #expect(error <= 1e-4, "\(dtype.name) \(variant): relative error \(error)")
        }
    }
}
