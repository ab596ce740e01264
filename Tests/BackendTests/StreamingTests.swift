import Foundation
import Testing
import LoRAFuse
import LoRAFuseFusion
import LoRAFuseModels
import LoRAFuseVulkan

/// The Vulkan backend under a device memory budget smaller than the model: weights that do
/// not fit beside the activations are streamed a group of layers at a time through two
/// buffers, with the same results as an all-resident run; a budget one layer cannot fit in is
/// one clear error before anything is allocated.
@Suite(.serialized, .enabled(if: BackendsUnderTest.vulkanTestsEnabled)) struct StreamingTests {
    /// A Vulkan backend with this budget; weights copied (host import, which would hold the
    /// mapped file in place and leave nothing to stream, is tested on its own below).
    static func vulkan(budget: Int?, staging: Bool = false, importHostMemory: Bool = false,
                       transferQueue: VulkanBackend.TransferQueue = .automatic) throws -> VulkanBackend {
        var configuration = VulkanBackend.Configuration.fromEnvironment
        configuration.transferQueue = transferQueue
        configuration.maxDeviceMemory = budget
        configuration.forceStaging = staging
        configuration.importHostMemory = importHostMemory
        configuration.hostImportMinimumBytes = 4096  // dev-tiny's Linears are 4–8 KiB
        return try VulkanBackend(configuration: configuration)
    }

    /// dev-tiny in fp8 with a hot LoRA: the base is what streams, the LoRA factors stay.
    static func setup() throws -> (FluxTransformer, FluxInputs, Graph) {
        let (model, inputs, _) = try Float8FluxTests.load("dev-tiny", "e4m3")
        let lora = try LoRAFile.load(path: Float8FluxTests.fixtures.deletingLastPathComponent().appendingPathComponent("lora/all.peft.safetensors").path,
                                     model: model)
        let transformer = FluxTransformer(model: model, adapters: [LoRAAdapter(file: lora, scale: 0.8)])
        let graph = try transformer.graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
        return (transformer, inputs, graph)
    }

    /// Unified memory (weights written in place); staging with the copies in the compute
    /// submissions; staging with the copies in submissions of their own that the compute
    /// waits for on a semaphore (a transfer-only queue where the device has one, else the
    /// compute queue: the same synchronisation either way).
    @Test(arguments: [(false, VulkanBackend.TransferQueue.off), (true, .off), (true, .compute), (true, .automatic)])
    func streamedForwardEqualsTheWholeOne(staging: Bool, transferQueue: VulkanBackend.TransferQueue) throws {
        let (_, inputs, graph) = try Self.setup()
        let whole = try Self.vulkan(budget: nil, staging: staging).execute(graph, inputs: inputs.bindings)
        #expect(whole.streamedSegments == 0)
        let weightBytes = Graph.weightSets(of: [graph]).reduce(0) { $0 + $1.byteCount }
        let peak = try #require(whole.peakDeviceBytes)
        // A budget that holds the activations and about a third of the weights.
        let budget = peak - weightBytes * 2 / 3
        let backend = try Self.vulkan(budget: budget, staging: staging, transferQueue: transferQueue)
        if transferQueue != .automatic { #expect(backend.copiesOnTransferQueue == (staging && transferQueue == .compute)) }
        let streamed = try backend.execute(graph, inputs: inputs.bindings)
        print("streaming \(staging ? "staging" : "unified") (transfer queue \(transferQueue), separate copies: \(backend.copiesOnTransferQueue)): budget \(budget), peak \(streamed.peakDeviceBytes ?? -1), "
              + "\(streamed.streamedSegments) segments, uploaded \(streamed.transientWeightBytes) of \(weightBytes) weight bytes, "
              + "waited \(streamed.uploadWaitSeconds) s")
        #expect(streamed.streamedSegments >= 3)
        #expect(try #require(streamed.peakDeviceBytes) <= budget)
        #expect(streamed.transientWeightBytes >= weightBytes)
        #expect(streamed.outputs[0].floats() == whole.outputs[0].floats(), "the same kernels in the same order")
    }

    /// makeResident under the budget keeps the small sets (the LoRA's factors) and streams the
    /// base; executions then upload only what is not resident.
    @Test func residencyKeepsTheSmallSetsAndStreamsTheRest() throws {
        let (_, inputs, graph) = try Self.setup()
        let sets = Graph.weightSets(of: [graph])
        let lora = try #require(sets.min { $0.byteCount < $1.byteCount })
        let total = sets.reduce(0) { $0 + $1.byteCount }
        let probe = try Self.vulkan(budget: nil).execute(graph, inputs: inputs.bindings)
        let activations = try #require(probe.peakDeviceBytes) - total
        // Past what makeResident takes whole (¾ of the budget), with room to stream the rest.
        let budget = total * 6 / 5
        #expect(budget / 2 - activations > total / 8, "the fixture leaves streaming room")
        let backend = try Self.vulkan(budget: budget)
        let resident = try backend.makeResident(sets)
        defer { resident.release() }
        #expect(resident.streamedBytes > 0 && resident.byteCount >= lora.byteCount)
        #expect(resident.byteCount + resident.streamedBytes == total)
        let result = try backend.execute(graph, inputs: inputs.bindings)
        #expect(result.streamedSegments >= 2 && result.transientWeightBytes >= resident.streamedBytes)
        #expect(try #require(result.peakDeviceBytes) <= budget)
        #expect(result.outputs[0].floats() == probe.outputs[0].floats())
    }

    /// On unified memory with VK_EXT_external_memory_host (lavapipe has it), weights in the
    /// memory-mapped file are imported, not copied: they are held without device memory, and
    /// the outputs equal a copying backend's bit for bit. Elsewhere everything is copied.
    @Test func unifiedMemoryImportsMappedWeights() throws {
        // The base alone: every imported weight is then a matmul's B (an 8-aligned start is
        // bound from the 16-aligned byte below it and applied as an element offset).
        let (transformer, inputs, _) = try Self.setup()
        let graph = try FluxTransformer(model: transformer.model)
            .graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
        let sets = Graph.weightSets(of: [graph])
        let total = sets.reduce(0) { $0 + $1.byteCount }
        let importing = try Self.vulkan(budget: nil, importHostMemory: true)
        let copying = try Self.vulkan(budget: nil)
        #expect(!copying.importsHostMemory)
        let imported = try importing.makeResident(sets), copied = try copying.makeResident(sets)
        defer { imported.release(); copied.release() }
        #expect(copied.allocatedBytes >= total && copying.memory().allocatedWeightBytes == copying.memory().residentWeightBytes)
        if importing.importsHostMemory {
            #expect(imported.allocatedBytes < total / 2, "most of the fp8 file is imported: \(imported.allocatedBytes) of \(total) bytes copied")
            #expect(importing.memory().residentWeightBytes >= total && importing.memory().allocatedWeightBytes == imported.allocatedBytes)
        } else {
            #expect(imported.allocatedBytes >= total, "no host import here: everything is copied")
        }
        let a = try importing.execute(graph, inputs: inputs.bindings), b = try copying.execute(graph, inputs: inputs.bindings)
        #expect(a.transientWeightBytes == 0 && b.transientWeightBytes == 0)
        #expect(a.outputs[0].floats() == b.outputs[0].floats())
        print("host import: \(importing.importsHostMemory), \(imported.allocatedBytes) of \(total) weight bytes copied")

        // A text encoder: its embedding table is read in place too (an 8-aligned start is the
        // gather's element offset), with the same output as a copy.
        let t5 = try T5Encoder.load(path: TextEncoderTests.fixtures.appendingPathComponent("models/t5-a/t5xxl_fp16.safetensors").path)
        let ids = try TextEncoderTests.ids("t5-a")
        let encoderGraph = try t5.graph(batch: ids.count, length: ids[0].count)
        let heldImported = try importing.makeResident(weightsOf: encoderGraph), heldCopied = try copying.makeResident(weightsOf: encoderGraph)
        defer { heldImported.release(); heldCopied.release() }
        if importing.importsHostMemory { #expect(heldImported.allocatedBytes < heldCopied.allocatedBytes / 2) }
        let c = try importing.execute(encoderGraph, inputs: t5.inputs(ids)), d = try copying.execute(encoderGraph, inputs: t5.inputs(ids))
        #expect(c.transientWeightBytes == 0 && c.outputs[0].floats() == d.outputs[0].floats())
    }

    /// A budget in which one node's weights cannot fit is one error naming the node, what it
    /// needs and the budget to ask for, before anything is allocated or run.
    @Test func aBudgetSmallerThanOneLayerIsAClearError() throws {
        let (_, inputs, graph) = try Self.setup()
        let probe = try Self.vulkan(budget: nil).execute(graph, inputs: inputs.bindings)
        let weightBytes = Graph.weightSets(of: [graph]).reduce(0) { $0 + $1.byteCount }
        let activations = try #require(probe.peakDeviceBytes) - weightBytes
        for budget in [activations + 512, activations / 2] {
            let backend = try Self.vulkan(budget: budget)
            let error = #expect(throws: BackendError.self) { try backend.execute(graph, inputs: inputs.bindings) }
            let text = error.map { "\($0)" } ?? ""
            #expect(text.contains("--max-device-memory") && text.contains("budget"), "\(text)")
            #expect(backend.memory().allocatedWeightBytes == 0)
        }
    }
}
