import Testing
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld
import LoRAFuseVulkan

extension OpCase: CustomTestStringConvertible {
    public var testDescription: String { name }
}

/// Every op of the catalogue on every backend against the float64 reference evaluator.
/// Serialized: the cases share one device per backend, and lavapipe slows to a crawl when
/// many test tasks block on its queue at once.
@Suite(.serialized) struct OpParityTests {
    @Test(arguments: OpCaseCatalog.all())
    func matchesFloat64Reference(_ opCase: OpCase) throws {
        let expected = try ReferenceEvaluator.evaluate(opCase.graph, inputs: opCase.inputs)[0]
        #expect(!BackendsUnderTest.all.isEmpty)
        for backend in BackendsUnderTest.all {
            let result = try backend.execute(opCase.graph, inputs: opCase.inputs)
            let output = result.outputs[0]
            #expect(output.shape == expected.shape, "\(BackendsUnderTest.label(backend))")
            let error = relativeError(actual: output.floats(), expected: expected.values)
            #expect(error <= opCase.tolerance, "\(BackendsUnderTest.label(backend)): relative error \(error) > \(opCase.tolerance)")
        }
    }

    #if canImport(CVulkan)
    /// The storage-buffer register kernels (matmul and attention), which the texel kernels fall
    /// back to (and which no default variant picks), on every matmul and attention case.
    @Test(.enabled(if: BackendsUnderTest.vulkanTestsEnabled)) func storageBufferRegisterKernelsMatch() throws {
        let vulkan = try #require(BackendsUnderTest.all.first(where: { $0 is VulkanBackend }) as? VulkanBackend)
        let registers = try VulkanBackend(deviceIndex: vulkan.device.index, matmulVariant: .registers)
        let cases = OpCaseCatalog.all().filter { $0.op == .matmul || $0.op == .attention }
        #expect(cases.filter { $0.op == .attention }.count >= 3)
        #expect(cases.count >= 13)
        for opCase in cases {
            let expected = try ReferenceEvaluator.evaluate(opCase.graph, inputs: opCase.inputs)[0]
            let error = relativeError(actual: try registers.execute(opCase.graph, inputs: opCase.inputs).outputs[0].floats(),
                                      expected: expected.values)
            #expect(error <= opCase.tolerance, "\(opCase.name): relative error \(error)")
        }
    }
    #endif

    @Test func catalogueCoversEveryComputeOp() {
        let covered = Set(OpCaseCatalog.all().map(\.op))
        let leaves: Set<OpKind> = [.input, .parameter]
        #expect(covered.union(leaves) == Set(OpKind.allCases))
    }
}
