import Foundation
import Testing
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld
import LoRAFuseCPU
import LoRAFuseVulkan

/// A backend that declines some op families and otherwise is `inner`: what a backend
/// without those kernels looks like to the scheduler.
final class RefusingBackend: Backend, @unchecked Sendable {
    let inner: any Backend
    let refused: Set<OpKind>
    init(_ inner: any Backend, refusing refused: Set<OpKind>) {
        self.inner = inner
        self.refused = refused
    }
    var name: String { "refusing-\(inner.name)" }
    var device: DeviceInfo { inner.device }
    var capabilities: BackendCapabilities {
        BackendCapabilities(ops: inner.capabilities.ops.subtracting(refused), weightTypes: inner.capabilities.weightTypes)
    }
    func supports(_ node: Node, in graph: Graph) -> NodeSupport {
        refused.contains(node.op.kind) ? .unsupported(reason: "refused by the test") : inner.supports(node, in: graph)
    }
    func upload(_ tensor: HostTensor) throws -> any BackendBuffer { try inner.upload(tensor) }
    func download(_ buffer: any BackendBuffer) throws -> HostTensor { try inner.download(buffer) }
    func makeResident(_ parts: [(set: WeightSet, handles: [WeightHandle])], progress: (@Sendable (Int, Int) -> Void)?) throws -> ResidentWeights {
        try inner.makeResident(parts, progress: progress)
    }
    func memory() -> BackendMemory { inner.memory() }
    func execute(_ graph: Graph, inputs: [String: HostTensor], options: ExecutionOptions) throws -> ExecutionResult {
        try validate(graph, inputs: inputs)
        return try inner.execute(graph, inputs: inputs, options: options)
    }
}

/// The scheduler's decompositions and CPU fallback (`BackendScheduler`): every fused op
/// refused by a backend still gives the float64 reference's answer, through its
/// decomposition when the backend runs the primitives, else on the fallback backend.
@Suite(.serialized) struct SchedulerTests {
    static let fused: [OpKind] = [.lowRankUpdate, .loraGate, .lowRankGate, .lowRankTopKAbsSum, .topKAbsSum, .attention]

    /// The backends a refusal is tried on: the CPU backend and each Vulkan device.
    static var primaries: [any Backend] {
        BackendsUnderTest.all.filter { backend in
            if backend is CPUBackend { return (backend as! CPUBackend).usesBLAS }
            #if canImport(CVulkan)
            if let vulkan = backend as? VulkanBackend { return !vulkan.configuration.forceStaging }
            #endif
            return true
        }
    }

    @Test(arguments: fused)
    func refusedOpMatchesReference(_ kind: OpKind) throws {
        let cases = OpCaseCatalog.all().filter { $0.op == kind }
        #expect(!cases.isEmpty)
        #expect(!Self.primaries.isEmpty)
        for primary in Self.primaries {
            let scheduler = BackendScheduler(primary: RefusingBackend(primary, refusing: [kind]), fallback: CPUBackend())
            for opCase in cases {
                let expected = try ReferenceEvaluator.evaluate(opCase.graph, inputs: opCase.inputs)[0]
                let result = try scheduler.execute(opCase.graph, inputs: opCase.inputs)
                let error = relativeError(actual: result.outputs[0].floats(), expected: expected.values)
                #expect(error <= opCase.tolerance, "\(BackendsUnderTest.label(primary)) \(opCase.name): relative error \(error)")
                let report = try #require(result.schedule)
                if Decomposition.exists(for: opCase.graph.nodes.first { $0.op.kind == kind }!.op) {
                    #expect(report.decomposed.count == 1 && report.fallbacks.isEmpty, "\(opCase.name): \(report)")
                    #expect(report.partitionBackends == [scheduler.primary.name])
                } else {
                    #expect(report.fallbacks.count == 1 && report.fallbacks[0].reason == "refused by the test", "\(opCase.name)")
                    #expect(report.partitionBackends.contains("cpu"))
                }
            }
        }
    }

    /// A decomposition whose primitives the backend refuses too goes whole to the fallback.
    @Test func decompositionNeedsItsPrimitives() throws {
        let opCase = try #require(OpCaseCatalog.all().first { $0.op == .lowRankUpdate })
        let scheduler = BackendScheduler(primary: RefusingBackend(CPUBackend(), refusing: [.lowRankUpdate, .matmul]), fallback: CPUBackend())
        let result = try scheduler.execute(opCase.graph, inputs: opCase.inputs)
        let report = try #require(result.schedule)
        #expect(report.decomposed.isEmpty)
        #expect(report.fallbacks.map(\.op) == [opCase.graph.nodes.last!.op.summary])
        let expected = try ReferenceEvaluator.evaluate(opCase.graph, inputs: opCase.inputs)[0]
        #expect(relativeError(actual: result.outputs[0].floats(), expected: expected.values) <= opCase.tolerance)
    }

    /// A graph that alternates backends: values cross the cuts both ways, intermediates and
    /// timings come back under the original node ids.
    @Test func partitionsCarryValuesBothWays() throws {
        var graph = Graph()
        let x = graph.input("x", [3, 5, 2, 4])
        let y = try graph.attention(query: x, key: x, value: x)
        let z = try graph.silu(y)
        let w = try graph.attention(query: z, key: x, value: z)
        let out = try graph.add(w, x)
        graph.markOutput(out)
        graph.markOutput(y)
        var random = SeededRandom(seed: 7)
        let inputs = ["x": random.tensor([3, 5, 2, 4])]
        let expected = try ReferenceEvaluator.evaluate(graph, inputs: inputs)
        let scheduler = BackendScheduler(primary: RefusingBackend(CPUBackend(), refusing: [.attention]), fallback: CPUBackend())
        let result = try scheduler.execute(graph, inputs: inputs, options: ExecutionOptions(recordTimings: true, keepIntermediates: true))
        let report = try #require(result.schedule)
        #expect(report.partitionBackends == ["cpu", "refusing-cpu", "cpu", "refusing-cpu"])
        #expect(report.fallbacks.map(\.node) == [y.id, w.id])
        #expect(report.transferredBytes > 0)
        for (actual, reference) in zip(result.outputs, expected) {
            #expect(relativeError(actual: actual.floats(), expected: reference.values) <= 1e-5)
        }
        #expect(Set(result.intermediates.keys) == Set(graph.nodes.map(\.id)))
        #expect(Set(result.nodeSeconds.keys).isSuperset(of: [y.id, z.id, w.id, out.id]))
    }

    /// A node neither backend runs is one error naming both reasons, before any work.
    @Test func nodeNoBackendRunsIsOneError() throws {
        let opCase = try #require(OpCaseCatalog.all().first { $0.op == .topKAbsSum })
        let scheduler = BackendScheduler(primary: RefusingBackend(CPUBackend(), refusing: [.topKAbsSum]),
                                         fallback: RefusingBackend(CPUBackend(), refusing: [.topKAbsSum]))
        #expect(throws: BackendError.self) { try scheduler.execute(opCase.graph, inputs: opCase.inputs) }
        do {
            _ = try scheduler.execute(opCase.graph, inputs: opCase.inputs)
        } catch {
            #expect("\(error)".contains("refused by the test; the refusing-cpu fallback cannot run it either"))
        }
    }

    /// A graph the primary runs whole is passed through unchanged (no partitions built).
    @Test func wholeGraphPassesThrough() throws {
        let opCase = try #require(OpCaseCatalog.all().first { $0.op == .lowRankUpdate })
        let scheduler = BackendScheduler(primary: CPUBackend(), fallback: CPUBackend())
        let plan = try scheduler.plan(opCase.graph)
        #expect(plan.runsWholeOnPrimary)
        let report = try #require(try scheduler.execute(opCase.graph, inputs: opCase.inputs).schedule)
        #expect(report.fallbacks.isEmpty && report.decomposed.isEmpty && report.transferredBytes == 0)
    }

    #if canImport(CVulkan)
    /// The hidden-check path: a LoRA DiT forward and an AutoLoRA forward on Vulkan with its
    /// LoRA update, gate and attention kernels switched off (`disabledOps`), through the
    /// scheduler, against the same peft and DiffSynth references as with every kernel on.
    @Test func vulkanWithOpsDisabledMatchesReferences() throws {
        let devices = BackendsUnderTest.all.compactMap { $0 as? VulkanBackend }.filter { !$0.configuration.forceStaging }
        if ProcessInfo.processInfo.environment["CI"] != nil { #expect(!devices.isEmpty, "CI must have a Vulkan device") }
        for vulkan in devices {
            var configuration = vulkan.configuration
            configuration.disabledOps = [.lowRankUpdate, .attention, .lowRankGate]
            let scheduler = BackendScheduler(primary: try VulkanBackend(deviceIndex: vulkan.device.index, configuration: configuration),
                                             fallback: CPUBackend())
            let (sample, expected) = try LoRAApplicationTests.run(LoRAApplicationTests.cases[5], merge: false, on: scheduler)
            #expect(relativeError(actual: sample.floats(), expected: expected.doubles()) <= 1e-4)
            let reference = try AutoLoRATests.expected("expected_two")
            let fused = try AutoLoRATests.sample([("lora_1", 1), ("lora_2", 0.7)], on: scheduler)
            #expect(relativeError(actual: fused, expected: reference) <= 1e-4)
        }
    }
    #endif
}
