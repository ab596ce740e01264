import Testing
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld
import LoRAFuseBackends
@testable import LoRAFuseCPU
import LoRAFuseVulkan

@Suite(.serialized) struct BackendBehaviourTests {
    @Test func registryListsAnAvailableCPUBackend() throws {
        BuiltinBackends.register()
        let plugin = try BackendRegistry.shared.plugin(named: "cpu")
        #expect(plugin.availability().devices.count == 1)
        let backend = try BackendRegistry.shared.makeBackend(named: "cpu")
        #expect(backend.name == "cpu")
        #expect(backend.capabilities.ops == Set(OpKind.allCases))
        #expect(throws: BackendError.self) { try BackendRegistry.shared.makeBackend(named: "tpu") }
        #expect(throws: BackendError.noSuchDevice(backend: "cpu", index: 3, count: 1)) {
            try BackendRegistry.shared.makeBackend(named: "cpu", deviceIndex: 3)
        }
    }

    @Test(arguments: BackendsUnderTest.all.indices)
    func rejectsMissingAndMistypedInputs(_ index: Int) throws {
        let backend = BackendsUnderTest.all[index]
        var graph = Graph()
        let x = graph.input("x", [2, 3])
        graph.markOutput(try graph.scale(x, 2))
        #expect(throws: BackendError.missingInput(name: "x", expected: TensorType([2, 3]))) {
            try backend.execute(graph, inputs: [:])
        }
        let wrong = HostTensor(shape: [3, 2], floats: [1, 2, 3, 4, 5, 6])
        #expect(throws: BackendError.inputTypeMismatch(name: "x", expected: TensorType([2, 3]), actual: TensorType([3, 2]))) {
            try backend.execute(graph, inputs: ["x": wrong])
        }
    }

    /// `reuseMemory` is a configuration, not a process-wide switch: two backends in one
    /// process, one pooled and one not, each allocate as configured.
    @Test func cpuMemoryReuseIsPerBackend() throws {
        var graph = Graph()
        let x = graph.input("x", [300, 1000])  // values past the 1 MiB mapping threshold
        graph.markOutput(try graph.scale(try graph.scale(x, 2), 0.5))
        let input = HostTensor(shape: [300, 1000], floats: (0..<300_000).map { Float($0 % 7) })
        let unpooled = CPUBackend(configuration: .init(threadCount: 1, reuseMemory: false))
        let pooled = CPUBackend(configuration: .init(threadCount: 1))
        #expect(unpooled.pool === CPUMemoryPool.unpooled && pooled.pool === CPUMemoryPool.shared)
        let misses = CPUMemoryPool.unpooled.misses
        let output = try unpooled.execute(graph, inputs: ["x": input]).outputs[0]
        #expect(output.floats() == input.floats())
        #expect(CPUMemoryPool.unpooled.misses > misses)  // values mapped fresh …
        #expect(CPUMemoryPool.unpooled.freeBytes == 0)  // … and unmapped, none kept
        _ = try pooled.execute(graph, inputs: ["x": input])
        let hits = CPUMemoryPool.shared.hits
        _ = try pooled.execute(graph, inputs: ["x": input])
        #expect(CPUMemoryPool.shared.hits > hits)  // the second pass reuses the first's regions
    }

    @Test(arguments: BackendsUnderTest.all.indices)
    func outOfRangeTokenIdIsAnError(_ index: Int) throws {
        let backend = BackendsUnderTest.all[index]
        var graph = Graph()
        let table = graph.parameter("table", HostTensor(shape: [4, 2], floats: Array(repeating: 1, count: 8)))
        let ids = graph.input("ids", [3], .int64)
        graph.markOutput(try graph.embedding(table: table, ids: ids))
        let bad = HostTensor(shape: [3], dtype: .int64, values: [0, 4, 1])
        #expect(throws: BackendError.self) { try backend.execute(graph, inputs: ["ids": bad]) }
    }

    @Test(arguments: BackendsUnderTest.all.indices)
    func chainedGraphKeepsIntermediatesAndTimings(_ index: Int) throws {
        let backend = BackendsUnderTest.all[index]
        var random = SeededRandom(seed: 5)
        var graph = Graph()
        let x = graph.input("x", [2, 5, 12])
        let w = graph.parameter("w", random.tensor([24, 12], dtype: .bfloat16))
        let bias = graph.parameter("b", random.tensor([24]))
        let hidden = try graph.gelu(graph.linear(x, weight: w, bias: bias), approximateTanh: true)
        let heads = try graph.reshape(hidden, [2, 5, 3, 8])
        let attended = try graph.attention(query: heads, key: heads, value: heads)
        let output = try graph.layerNorm(graph.reshape(attended, [2, 5, 24]))
        graph.markOutput(output)
        let inputs = ["x": random.tensor([2, 5, 12])]
        let result = try backend.execute(graph, inputs: inputs, options: ExecutionOptions(recordTimings: true, keepIntermediates: true))
        #expect(result.intermediates.count == graph.nodes.count)
        #expect(result.nodeSeconds.count == graph.nodes.count)
        let expected = try ReferenceEvaluator.evaluate(graph, inputs: inputs)[0]
        #expect(relativeError(actual: result.outputs[0].floats(), expected: expected.values) <= 1e-4)
        let buffer = try backend.upload(inputs["x"]!)
        #expect(try backend.download(buffer).floats() == inputs["x"]!.floats())
    }
}

// Vulkan-only tests need the Vulkan target built with its headers (see VulkanBackendPlugin.swift).
#if canImport(CVulkan)
@Suite(.serialized) struct VulkanLimitsTests {
    /// Matmuls whose operands are past the binding limit are split into windows and still
    /// match float64. The limit is lowered to 64 KiB so the split runs on small tensors;
    /// every layout (transposed or not, batched, F32/F16/BF16 weights) and both kernels.
    @Test(.enabled(if: BackendsUnderTest.vulkanTestsEnabled), arguments: [(3, 300, 70, true, DType.float32), (260, 70, 8, true, .float32), (130, 150, 61, true, .bfloat16),
                      (97, 40, 300, false, .float32), (70, 300, 64, true, .float16)])
    func matmulPastTheBindingLimitIsSplit(m: Int, n: Int, k: Int, transposeB: Bool, dtype: DType) throws {
        var random = SeededRandom(seed: 21)
        var graph = Graph()
        let a = graph.input("a", [2, m, k])
        let w = graph.parameter("w", random.tensor(transposeB ? [n, k] : [k, n], dtype: dtype))
        graph.markOutput(try graph.matmul(a, w, transposeB: transposeB))
        let inputs = ["a": random.tensor([2, m, k])]
        let expected = try ReferenceEvaluator.evaluate(graph, inputs: inputs)[0].values
        for variant in [VulkanBackend.MatmulVariant.registers, .texel, .tiled] {
            let vulkan = try VulkanBackend(matmulVariant: variant, bindingLimit: 64 << 10)
            let actual = try vulkan.execute(graph, inputs: inputs).outputs[0].floats()
            #expect(relativeError(actual: actual, expected: expected) <= 1e-4, "\(variant)")
        }
    }

    /// The LoRA kernel walks rows in chunks when x, y or the output is past the binding limit.
    @Test(.enabled(if: BackendsUnderTest.vulkanTestsEnabled), arguments: [(300, 90, 130, 16, DType.float32), (257, 200, 70, 5, .bfloat16), (301, 92, 131, 8, .float16)])
    func lowRankUpdatePastTheBindingLimitIsSplit(rows: Int, k: Int, n: Int, rank: Int, dtype: DType) throws {
        var random = SeededRandom(seed: 22)
        var graph = Graph()
        let y = graph.input("y", [rows, n]), x = graph.input("x", [rows, k])
        let down = graph.parameter("down", random.tensor([rank, k], dtype: dtype))
        let up = graph.parameter("up", random.tensor([n, rank], dtype: dtype))
        graph.markOutput(try graph.lowRankUpdate(y, input: x, down: down, up: up, scale: -1.5))
        let inputs = ["y": random.tensor([rows, n]), "x": random.tensor([rows, k])]
        let expected = try ReferenceEvaluator.evaluate(graph, inputs: inputs)[0].values
        let vulkan = try VulkanBackend(bindingLimit: 64 << 10)
        let actual = try vulkan.execute(graph, inputs: inputs).outputs[0].floats()
        #expect(relativeError(actual: actual, expected: expected) <= 1e-4)
    }

    /// The Top-K selection walks inputs past the binding limit in windows, as one set.
    @Test(.enabled(if: BackendsUnderTest.vulkanTestsEnabled)) func topKPastTheBindingLimitIsSplit() throws {
        var random = SeededRandom(seed: 23)
        var graph = Graph()
        let a = graph.input("a", [300, 101]), b = graph.input("b", [70, 33])
        graph.markOutput(try graph.topKAbsSum([a, b], k: 4321))
        let inputs = ["a": random.tensor([300, 101]), "b": random.tensor([70, 33])]
        let expected = try ReferenceEvaluator.evaluate(graph, inputs: inputs)[0].values
        let actual = try VulkanBackend(bindingLimit: 64 << 10).execute(graph, inputs: inputs).outputs[0].floats()
        #expect(relativeError(actual: actual, expected: expected) <= 1e-5)
    }

    /// Embedding tables past the binding limit (CLIP-L's F32 table on lavapipe) are gathered
    /// one window of rows at a time, in every table type.
    @Test(.enabled(if: BackendsUnderTest.vulkanTestsEnabled), arguments: [DType.float32, .bfloat16, .float8E4M3])
    func embeddingPastTheBindingLimitIsSplit(_ dtype: DType) throws {
        var random = SeededRandom(seed: 24)
        var graph = Graph()
        let table = graph.parameter("table", random.tensor([1000, 37], dtype: dtype))  // 148 kB in F32
        let ids = graph.input("ids", [3, 11], .int64)
        graph.markOutput(try graph.embedding(table: table, ids: ids))
        let inputs = ["ids": HostTensor(shape: [3, 11], dtype: .int64, values: (0..<33).map { Double(($0 * 331 + 7) % 1000) } + [])]
        let expected = try ReferenceEvaluator.evaluate(graph, inputs: inputs)[0].values
        let actual = try VulkanBackend(bindingLimit: 16 << 10).execute(graph, inputs: inputs).outputs[0].floats()
        #expect(relativeError(actual: actual, expected: expected) == 0)
    }

    /// A tensor past maxStorageBufferRange is one clear error naming the limit, not a crash.
    @Test(.enabled(if: BackendsUnderTest.vulkanTestsEnabled)) func tensorLargerThanTheBindingLimitIsAClearError() throws {
        // The limit lowered to 64 KiB stands for maxStorageBufferRange on any device.
        let limit = 64 << 10
        let vulkan = try VulkanBackend(bindingLimit: limit)
        var graph = Graph()
        let count = limit / 4 + 1
        let x = graph.input("x", [count])
        graph.markOutput(try graph.scale(x, 2))
        let input = HostTensor(shape: [count], dtype: .float32) { _ in }
        #expect(throws: BackendError.self) { try vulkan.execute(graph, inputs: ["x": input]) }
        do {
            _ = try vulkan.execute(graph, inputs: ["x": input])
        } catch {
            #expect("\(error)".contains("maxStorageBufferRange"))
        }
    }
}
#endif  // canImport(CVulkan)

@Suite(.serialized) struct DeepGraphTests {
    /// 40 residual layers: backends that reuse intermediate memory must still match float64.
    @Test(arguments: BackendsUnderTest.all.indices)
    func deepChainMatchesReference(_ index: Int) throws {
        let backend = BackendsUnderTest.all[index]
        var random = SeededRandom(seed: 9)
        var graph = Graph()
        var x = graph.input("x", [3, 7, 24])
        for layer in 0..<40 {
            let w = graph.parameter("w\(layer)", random.tensor([24, 24], dtype: layer % 2 == 0 ? .float32 : .bfloat16, in: -0.2...0.2))
            let normed = try graph.layerNorm(x)
            let hidden = try graph.silu(graph.linear(normed, weight: w))
            x = try graph.add(x, graph.reshape(graph.permute(graph.reshape(hidden, [3, 7, 4, 6]), [0, 1, 2, 3]), [3, 7, 24]))
        }
        graph.markOutput(x)
        let inputs = ["x": random.tensor([3, 7, 24])]
        let expected = try ReferenceEvaluator.evaluate(graph, inputs: inputs)[0]
        let actual = try backend.execute(graph, inputs: inputs).outputs[0]
        #expect(relativeError(actual: actual.floats(), expected: expected.values) <= 1e-4, "\(BackendsUnderTest.label(backend))")
    }
}
