// Built only where the Vulkan headers are installed; see VulkanBackendPlugin.swift.
#if canImport(CVulkan)
import CVulkan
import Foundation
import LoRAFuse

/// One execution whose weights do not fit the device budget beside its activations: the
/// nodes are cut into segments whose non-resident weights fit one of two streaming buffers,
/// and the segments run in order, each its own submission. While segment k computes, the
/// host writes segment k+1's weights into the other buffer (directly on unified memory,
/// through a staging buffer and recorded copies on a discrete GPU); a buffer is rewritten
/// only after the segment that read it has finished. Where the device has a transfer-only
/// queue family (a copy engine), those copies are submitted there, so segment k+1's upload
/// runs beside segment k's compute, and segment k+1 waits for it on a semaphore. Activations and resident weights (LoRA
/// factors, whatever `makeResident` kept) stay in place throughout.
struct VulkanStreamedExecution {
    let execution: VulkanGraphExecution
    let plan: MemoryPlan
    /// Parameter nodes whose weights are not resident.
    let transient: [Int]
    /// Bytes the resident weights hold.
    let held: Int
    /// Bytes the budget leaves for the two streaming buffers.
    let available: Int

    var graph: Graph { execution.graph }
    var device: VulkanDevice { execution.device }
    var backend: VulkanBackend { execution.backend }

    /// Nodes `nodes` run after the weights `weights` (parameter node ids) are in their buffer.
    struct Segment {
        var nodes: Range<Int>
        var weights: [Int] = []
        var bytes = 0
    }

    /// The parameter a node's value is (through reshapes), or nil.
    func root(_ id: Int) -> Int? {
        var current = id
        while true {
            switch graph.nodes[current].op {
            case .parameter: return current
            case .reshape: current = graph.nodes[current].inputs[0]
            default: return nil
            }
        }
    }

    /// Cuts the nodes into segments whose streamed weights fit `bufferBytes` each; throws,
    /// before anything is allocated, when one node alone reads more than that.
    func segments(bufferBytes: Int) throws -> [Segment] {
        let streamed = Set(transient)
        var segments: [Segment] = []
        var current = Segment(nodes: 0..<0)
        var inCurrent = Set<Int>()
        for node in graph.nodes {
            switch node.op {
            case .parameter, .input, .reshape: continue
            default: break
            }
            let needs = Set(node.inputs.compactMap(root).filter(streamed.contains))
            let needBytes = needs.reduce(0) { $0 + device.storageAligned(graph.nodes[$1].type.byteCount) }
            guard needBytes <= bufferBytes else {
                let budget = backend.deviceBudget
                // Enough with these resident weights, and enough when makeResident keeps up to
                // half of a larger budget (its rule when the model does not fit).
                let activations = device.storageAligned(max(plan.totalBytes, 16))
                let minimum = max(held + activations + 2 * needBytes, 2 * (activations + 2 * needBytes))
                throw BackendError.outOfMemory(backend: "vulkan", bytes: needBytes, reason:
                    "node %\(node.id) \(node.op.summary)\(node.label.map { " (\($0))" } ?? "") reads \(ByteSize.describe(needBytes)) of weights, "
                    + "but the device budget of \(ByteSize.describe(budget)) leaves two streaming buffers of \(ByteSize.describe(bufferBytes)) "
                    + "beside \(ByteSize.describe(plan.totalBytes)) of activations and \(ByteSize.describe(held)) of resident weights; "
                    + "give --max-device-memory at least \(ByteSize.describe(minimum))")
            }
            let fresh = needs.subtracting(inCurrent)
            let freshBytes = fresh.reduce(0) { $0 + device.storageAligned(graph.nodes[$1].type.byteCount) }
            if current.bytes + freshBytes > bufferBytes {
                current.nodes = current.nodes.lowerBound..<node.id
                segments.append(current)
                current = Segment(nodes: node.id..<node.id)
                inCurrent = []
            }
            for id in needs.sorted() where inCurrent.insert(id).inserted {
                current.weights.append(id)
                current.bytes += device.storageAligned(graph.nodes[id].type.byteCount)
            }
        }
        current.nodes = current.nodes.lowerBound..<graph.nodes.count
        segments.append(current)
        return segments
    }

    func run() throws -> ExecutionResult {
        let activations = device.storageAligned(max(plan.totalBytes, 16))
        let budget = backend.deviceBudget
        guard available > 0 else {
            throw BackendError.outOfMemory(backend: "vulkan", bytes: activations + held, reason:
                "the activations need \(ByteSize.describe(activations)) and the resident weights hold \(ByteSize.describe(held)); "
                + "the device budget of \(ByteSize.describe(budget)) leaves nothing to stream the other weights through "
                + "(raise --max-device-memory, or run fewer tokens)")
        }
        let alignment = device.storageAlignment
        let bufferBytes = available / 2 / alignment * alignment
        let segments = try segments(bufferBytes: bufferBytes)
        let largest = segments.map(\.bytes).max() ?? 0

        // Allocations, all before any work: activations, the two streaming buffers (and, on a
        // discrete GPU, their staging twins and one staging buffer for inputs and outputs).
        let scratch = try VulkanBuffer(device: device, size: activations, hostVisible: false)
        let bufferCount = min(2, segments.count)
        let unified = device.unifiedMemory
        let transfer = unified ? nil : device.transfer
        // Written by the transfer queue, read by the compute queue: shared by both families.
        let families = transfer.map { [device.queueFamily, $0.family] } ?? []
        let buffers = try (0..<bufferCount).map { _ in
            try VulkanBuffer(device: device, size: max(largest, 16), hostVisible: false, sharedWith: families)
        }
        let weightStaging = unified ? [] : try (0..<bufferCount).map { _ in try VulkanBuffer(device: device, size: max(largest, 16), hostVisible: true) }
        var ranges = [VulkanRange?](repeating: nil, count: graph.nodes.count)
        var inputUploads: [(HostTensor, VulkanRange)] = []
        for node in graph.nodes {
            let size = max(4, (node.type.byteCount + 3) & ~3)
            switch node.op {
            case .parameter:
                ranges[node.id] = execution.residentRange(node.id)  // streamed ones: set per segment
            case let .input(name):
                let range = VulkanRange(buffer: scratch, offset: plan.offset(of: node.id)!, size: size)
                ranges[node.id] = range
                inputUploads.append((execution.inputs[name]!, range))
            case .reshape:
                if let source = ranges[node.inputs[0]] { ranges[node.id] = source }
            default:
                ranges[node.id] = VulkanRange(buffer: scratch, offset: plan.offset(of: node.id)!, size: size)
            }
        }
        let readBack = options.keepIntermediates ? graph.nodes.map(\.id).filter { root($0) == nil } : graph.outputs
        var io: VulkanBuffer?
        var ioOffsets: [Int: Int] = [:]
        if !unified {
            var total = 0
            for (tensor, _) in inputUploads { total += (tensor.byteCount + 15) & ~15 }
            for id in readBack { ioOffsets[id] = total; total += (graph.nodes[id].type.byteCount + 15) & ~15 }
            io = try VulkanBuffer(device: device, size: max(total, 16), hostVisible: true)
        } else {
            for (tensor, range) in inputUploads { try backend.writeHost(tensor, to: range) }
        }

        var submissions: [VulkanSubmission?] = [nil, nil]
        var copies: [VulkanSubmission?] = [nil, nil]  // on the transfer queue, per buffer
        var finished: [VulkanSubmission] = []  // kept for their timestamps
        var uploaded = 0
        var waitSeconds = 0.0
        let start = DispatchTime.now().uptimeNanoseconds
        for (index, segment) in segments.enumerated() {
            let slot = index % 2
            // The segment that last read this buffer must be done before it is rewritten.
            if let previous = submissions[slot] {
                try previous.wait()
                try copies[slot]?.wait()  // done before its reader; waited so its staging may be rewritten
                copies[slot] = nil
                if options.recordTimings { finished.append(previous) }
                submissions[slot] = nil
                options.progress?(segments[index - 2].nodes.upperBound, graph.nodes.count)
            }
            // Write the weights; the device is idle from the moment the segment before this
            // one finishes (or from the start, when nothing runs) until this one is submitted.
            let running = submissions[1 - slot]
            var idleSince: UInt64? = running == nil ? DispatchTime.now().uptimeNanoseconds : nil
            var offset = 0
            for id in segment.weights {
                let weight = graph.weight(id)
                let size = max(4, (weight.byteCount + 3) & ~3)
                ranges[id] = VulkanRange(buffer: buffers[slot], offset: offset, size: size)
                let target = unified ? buffers[slot].mapped! : weightStaging[slot].mapped!
                weight.withUnsafeBytes { bytes in
                    if let base = bytes.baseAddress { (target + offset).copyMemory(from: base, byteCount: bytes.count) }
                }
                offset += device.storageAligned(weight.byteCount)
                uploaded += weight.byteCount
                if idleSince == nil, running!.isComplete { idleSince = DispatchTime.now().uptimeNanoseconds }
            }
            if idleSince == nil, running!.isComplete { idleSince = DispatchTime.now().uptimeNanoseconds }
            if let idleSince { waitSeconds += Double(DispatchTime.now().uptimeNanoseconds - idleSince) / 1e9 }
            // Reshapes of streamed weights follow them into this buffer.
            for node in graph.nodes[segment.nodes] {
                if case .reshape = node.op, let source = ranges[node.inputs[0]] { ranges[node.id] = source }
            }

            // On a transfer queue: the copies go in a submission of their own that signals
            // `ready`, which this segment's compute waits for.
            var ready: VulkanSemaphore?
            if let transfer, segment.bytes > 0 {
                let copier = try VulkanCommandRecorder(device: device, maximumDispatches: 0, timestamps: 0, transfer: transfer)
                for id in segment.weights where graph.nodes[id].type.byteCount > 0 {
                    let range = ranges[id]!, bytes = graph.nodes[id].type.byteCount
                    copier.copy(from: VulkanRange(buffer: weightStaging[slot], offset: range.offset, size: bytes), to: range, size: bytes)
                }
                let semaphore = try VulkanSemaphore(device: device)
                copies[slot] = try copier.submit(signalling: semaphore)
                ready = semaphore
            }

            let recorder = try VulkanCommandRecorder(device: device, maximumDispatches: execution.dispatchEstimate(segment.nodes),
                                                     timestamps: options.recordTimings ? segment.nodes.count : 0)
            var copied = false
            if !unified {
                for id in segment.weights where transfer == nil {
                    let range = ranges[id]!
                    let bytes = graph.nodes[id].type.byteCount
                    if bytes > 0 {
                        recorder.copy(from: VulkanRange(buffer: weightStaging[slot], offset: range.offset, size: bytes), to: range, size: bytes)
                        copied = true
                    }
                }
                if index == 0, let io {
                    var ioOffset = 0
                    for (tensor, range) in inputUploads {
                        tensor.withUnsafeBytes { bytes in
                            if let base = bytes.baseAddress { (io.mapped! + ioOffset).copyMemory(from: base, byteCount: bytes.count) }
                        }
                        if tensor.byteCount > 0 {
                            recorder.copy(from: VulkanRange(buffer: io, offset: ioOffset, size: tensor.byteCount), to: range, size: tensor.byteCount)
                            copied = true
                        }
                        ioOffset += (tensor.byteCount + 15) & ~15
                    }
                }
            }
            if copied {
                recorder.barrier(from: VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                                 to: VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT)
            }
            let kernels = VulkanKernels(device: device, recorder: recorder, matmulVariant: backend.effectiveMatmulVariant,
                                        configuration: backend.configuration)
            for node in graph.nodes[segment.nodes] {
                switch node.op {
                case .parameter, .input, .reshape: continue  // no kernel; their ranges are set above
                default: break
                }
                let operands = node.inputs.map { (ranges[$0]!, graph.nodes[$0].type) }
                try kernels.record(node, operands: operands, output: ranges[node.id]!)
                recorder.writeTimestamp(label: node.id)
            }
            if index == segments.count - 1, let io {
                recorder.barrier(from: VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                                 to: VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT)
                for id in readBack where graph.nodes[id].type.byteCount > 0 {
                    let size = graph.nodes[id].type.byteCount
                    recorder.copy(from: ranges[id]!, to: VulkanRange(buffer: io, offset: ioOffsets[id]!, size: size), size: size)
                }
            }
            submissions[slot] = try recorder.submit(waitingFor: ready)
        }
        for copy in copies.compactMap({ $0 }) { try copy.wait() }
        for submission in submissions.compactMap({ $0 }) {
            try submission.wait()
            if options.recordTimings { finished.append(submission) }
        }
        options.progress?(graph.nodes.count, graph.nodes.count)
        let wall = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9

        func value(_ id: Int) throws -> HostTensor {
            let type = graph.nodes[id].type
            if let parameter = root(id) { return graph.weight(parameter).reshaped(type.shape) }
            if let io {
                return HostTensor(shape: type.shape, dtype: type.dtype) { buffer in
                    if let base = buffer.baseAddress { base.copyMemory(from: io.mapped! + ioOffsets[id]!, byteCount: buffer.count) }
                }
            }
            return try backend.readHost(ranges[id]!, type: type)
        }
        var result = try execution.result(value: value, timings: try finished.flatMap { try $0.recorder.timestamps() }, wall: wall)
        result.transientWeightBytes = uploaded
        result.streamedSegments = segments.count
        result.uploadWaitSeconds = waitSeconds
        result.peakDeviceBytes = held + activations + buffers.reduce(0) { $0 + $1.size }
        return result
    }

    var options: ExecutionOptions { execution.options }
}

#endif
