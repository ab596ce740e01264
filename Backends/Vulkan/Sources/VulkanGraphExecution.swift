// Built only where the Vulkan headers are installed; see VulkanBackendPlugin.swift.
#if canImport(CVulkan)
import CVulkan
import Foundation
import LoRAFuse

/// One execution of a graph on the Vulkan backend: plans memory, records every node into
/// one command buffer, submits once, reads the outputs back.
struct VulkanGraphExecution {
    let backend: VulkanBackend
    let graph: Graph
    let inputs: [String: HostTensor]
    let options: ExecutionOptions
    var device: VulkanDevice { backend.context }
    /// Parameters some node reads other than as a matmul's B or an embedding's table: they
    /// cannot take a range with `leading` bytes (one pass over the graph, per execution).
    let readAsWhole: Set<Int>

    init(backend: VulkanBackend, graph: Graph, inputs: [String: HostTensor], options: ExecutionOptions) {
        self.backend = backend
        self.graph = graph
        self.inputs = inputs
        self.options = options
        var readAsWhole = Set<Int>()
        for node in graph.nodes {
            for (position, input) in node.inputs.enumerated() where graph.parameters[input] != nil {
                let offsetReader: Bool = switch node.op {
                case .matmul: node.inputs.count == 2 && position == 1 && node.inputs[0] != input
                case .embedding: position == 0 && node.inputs[1] != input
                default: false
                }
                if !offsetReader { readAsWhole.insert(input) }
            }
        }
        self.readAsWhole = readAsWhole
    }

    func run() throws -> ExecutionResult {
        try checkEmbeddingIds()
        // One scratch buffer; values share bytes once their last reader has run (the
        // barrier after every dispatch orders the reuse).
        let plan = MemoryPlan(graph: graph, alignment: device.storageAlignment, keepAll: options.keepIntermediates)
        // Weights not resident either fit beside the activations under the device budget
        // (copied in whole) or are streamed through two buffers, a group of layers at a time.
        let transient = graph.nodes.filter { node in
            if case .parameter = node.op { return residentRange(node.id) == nil }
            return false
        }.map(\.id)
        let transientTotal = transient.reduce(0) { $0 + device.storageAligned(graph.nodes[$1].type.byteCount) }
        let activations = device.storageAligned(max(plan.totalBytes, 16))
        let held = backend.residentBytes
        let available = backend.deviceBudget - held - activations
        if transientTotal > available {
            return try VulkanStreamedExecution(execution: self, plan: plan, transient: transient, held: held, available: available).run()
        }
        var result = try runWhole(plan: plan)
        result.peakDeviceBytes = held + activations + transientTotal
        return result
    }

    /// The resident range parameter `id` is read from, or nil to copy it in: a range with
    /// `leading` bytes is usable only where every reader is a matmul taking it as B or an
    /// embedding taking it as its table.
    func residentRange(_ id: Int) -> VulkanRange? {
        guard let range = backend.residentRange(graph.parameters[id]!) else { return nil }
        return range.leading == 0 || !readAsWhole.contains(id) ? range : nil
    }


    /// Everything in one command buffer, the weights that are not resident copied in first.
    private func runWhole(plan: MemoryPlan) throws -> ExecutionResult {
        let scratch = try VulkanBuffer(device: device, size: max(plan.totalBytes, 16), hostVisible: false)
        var ranges = [VulkanRange?](repeating: nil, count: graph.nodes.count)
        var uploads: [(HostTensor, VulkanRange)] = []
        // Weights not made resident are copied in for this execution alone, with the inputs
        // (one staging buffer and recorded copies on a discrete GPU).
        var transient: VulkanArena?
        var transientBytes = 0
        for node in graph.nodes {
            let size = max(4, (node.type.byteCount + 3) & ~3)
            switch node.op {
            case .parameter:
                if let range = residentRange(node.id) {
                    ranges[node.id] = range
                } else {
                    if transient == nil { transient = VulkanArena(device: device, hostVisible: false, expectedBytes: transientWeightEstimate()) }
                    let weight = graph.weight(node.id)
                    let range = try transient!.allocate(weight.byteCount)
                    uploads.append((weight, range))
                    ranges[node.id] = range
                    transientBytes += weight.byteCount
                }
            case let .input(name):
                let range = VulkanRange(buffer: scratch, offset: plan.offset(of: node.id)!, size: size)
                ranges[node.id] = range
                uploads.append((inputs[name]!, range))
            case .reshape:
                let source = ranges[node.inputs[0]]!
                ranges[node.id] = VulkanRange(buffer: source.buffer, offset: source.offset, size: source.size)
            default:
                ranges[node.id] = VulkanRange(buffer: scratch, offset: plan.offset(of: node.id)!, size: size)
            }
        }
        // Unified memory: inputs (and weights not resident) are written in place. Otherwise
        // one staging buffer carries them all up and every result down, with copies recorded around the kernels.
        let readBack = options.keepIntermediates ? graph.nodes.map(\.id) : graph.outputs
        var staging: VulkanBuffer?
        var stagingOffsets: [Int: Int] = [:]
        if !device.unifiedMemory {
            var total = 0
            for (tensor, _) in uploads { total += (tensor.byteCount + 15) & ~15 }
            for id in readBack { stagingOffsets[id] = total; total += (graph.nodes[id].type.byteCount + 15) & ~15 }
            staging = try VulkanBuffer(device: device, size: max(total, 16), hostVisible: true)
        }
        let recorder = try VulkanCommandRecorder(device: device, maximumDispatches: dispatchEstimate(),
                                                 timestamps: options.recordTimings ? graph.nodes.count : 0)
        if let staging {
            var offset = 0
            for (tensor, range) in uploads {
                tensor.withUnsafeBytes { bytes in
                    if let base = bytes.baseAddress { (staging.mapped! + offset).copyMemory(from: base, byteCount: bytes.count) }
                }
                if tensor.byteCount > 0 { recorder.copy(from: VulkanRange(buffer: staging, offset: offset, size: tensor.byteCount), to: range, size: tensor.byteCount) }
                offset += (tensor.byteCount + 15) & ~15
            }
            recorder.barrier(from: VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                             to: VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT)
        } else {
            for (tensor, range) in uploads { try backend.writeHost(tensor, to: range) }
        }

        let kernels = VulkanKernels(device: device, recorder: recorder, matmulVariant: backend.effectiveMatmulVariant,
                                    configuration: backend.configuration)
        for node in graph.nodes {
            let operands = node.inputs.map { (ranges[$0]!, graph.nodes[$0].type) }
            try kernels.record(node, operands: operands, output: ranges[node.id]!)
            recorder.writeTimestamp(label: node.id)
        }
        if let staging {
            recorder.barrier(from: VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                             to: VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT)
            for id in readBack where graph.nodes[id].type.byteCount > 0 {
                let size = graph.nodes[id].type.byteCount
                recorder.copy(from: ranges[id]!, to: VulkanRange(buffer: staging, offset: stagingOffsets[id]!, size: size), size: size)
            }
        }
        let start = DispatchTime.now().uptimeNanoseconds
        let timings = try recorder.submitAndWait()
        let wall = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        options.progress?(graph.nodes.count, graph.nodes.count)

        func value(_ id: Int) throws -> HostTensor {
            let type = graph.nodes[id].type
            if let staging {
                return HostTensor(shape: type.shape, dtype: type.dtype) { buffer in
                    if let base = buffer.baseAddress { base.copyMemory(from: staging.mapped! + stagingOffsets[id]!, byteCount: buffer.count) }
                }
            }
            return try backend.readHost(ranges[id]!, type: type)
        }
        var result = try self.result(value: value, timings: timings, wall: wall)
        result.transientWeightBytes = transientBytes
        return result
    }

    /// The outputs (and intermediates, and per-node seconds, as the options ask) once the
    /// work is done: `value` reads a node's value back, `timings` are the timestamp labels'
    /// seconds (empty without timestamp support: the whole `wall` time goes to the last node).
    func result(value: (Int) throws -> HostTensor, timings: [(label: Int, seconds: Double)], wall: Double) throws -> ExecutionResult {
        var result = ExecutionResult(outputs: try graph.outputs.map(value))
        if options.keepIntermediates {
            for node in graph.nodes { result.intermediates[node.id] = try value(node.id) }
        }
        if options.recordTimings {
            if timings.isEmpty {
                for node in graph.nodes { result.nodeSeconds[node.id] = 0 }
                if let last = graph.nodes.last { result.nodeSeconds[last.id] = wall }
            } else {
                for (label, seconds) in timings where label >= 0 { result.nodeSeconds[label, default: 0] += seconds }
            }
        }
        return result
    }

    /// Bytes of the parameters that are not resident (sizes the transient arena).
    private func transientWeightEstimate() -> Int {
        graph.parameters.reduce(0) { total, entry in
            residentRange(entry.key) == nil ? total + graph.nodes[entry.key].type.byteCount + device.storageAlignment : total
        }
    }

    /// Descriptor sets the nodes `range` (all when nil) will dispatch, at most.
    func dispatchEstimate(_ range: Range<Int>? = nil) -> Int {
        let windowBytes = VulkanKernels.windowElements(device) * 4
        return graph.nodes[range ?? graph.nodes.indices].reduce(0) { count, node in
            switch node.op {
            case .concat: return count + node.inputs.count
            case .topKAbsSum:
                let windows = node.inputs.reduce(0) { $0 + (graph.nodes[$1].type.byteCount + windowBytes - 1) / windowBytes }
                return count + 6 + 5 * windows
            case .lowRankTopKAbsSum:
                var windows = 0
                for part in stride(from: 0, to: node.inputs.count, by: 2) {
                    let up = graph.nodes[node.inputs[part]].type.shape, down = graph.nodes[node.inputs[part + 1]].type.shape
                    windows += (up[0] * down[1] * 4 + windowBytes - 1) / windowBytes
                }
                // Per part: widen, scale and the matmul's row blocks; then the selection.
                return count + 6 + 8 * windows + 3 * node.inputs.count
            case .lowRankUpdate:
                let rows = graph.nodes[node.inputs[0]].type.byteCount, x = graph.nodes[node.inputs[1]].type.byteCount
                return count + 1 + max(rows, x) / windowBytes
            default: return count + 1
            }
        }
    }

    /// Embedding ids are read on the host (a kernel cannot report an id past its table).
    func checkEmbeddingIds() throws {
        for node in graph.nodes {
            guard case .embedding = node.op else { continue }
            let idsNode = graph.nodes[node.inputs[1]]
            let ids: HostTensor
            switch idsNode.op {
            case let .input(name): ids = inputs[name]!
            default: ids = graph.weight(idsNode.id)
            }
            let vocabulary = graph.nodes[node.inputs[0]].type.shape[0]
            for (position, id) in ids.doubles().enumerated() where id < 0 || id >= Double(vocabulary) {
                throw BackendError.deviceFailure(backend: "vulkan", reason:
                    "node %\(node.id) embedding: id \(Int(id)) at position \(position) is outside the table of \(vocabulary) rows")
            }
        }
    }
}

extension VulkanBackend {
    /// What the kernels can run on this device: the op families not disabled, layout ops on
    /// 4-byte types up to rank 6, matmul batches up to 3 axes, LoRA ranks up to the shared
    /// memory a group holds, attention head dimensions the shared memory fits, casts from
    /// the weight types, and tensors past maxStorageBufferRange only where a kernel splits
    /// its operands into windows (matmul, the LoRA ops, embedding tables).
    public func supports(_ node: Node, in graph: Graph) -> NodeSupport {
        if configuration.disabledOps.contains(node.op.kind) {
            return .unsupported(reason: "\(node.op.kind.rawValue) is disabled in this backend's configuration (LORAFUSE_VULKAN_DISABLE_OPS)")
        }
        let base = capabilitySupport(node)
        guard base.isSupported else { return base }
        let limit = context.bindingLimit
        let sharedMemory = Int(context.limits.maxComputeSharedMemorySize)
        func type(_ id: Int) -> TensorType { graph.nodes[id].type }
        switch node.op {
        case .permute, .slice, .concat:
            guard node.type.dtype.byteSize == 4 else { return .unsupported(reason: "layout ops on \(node.type.dtype.name) are not implemented (4-byte types only)") }
            guard node.type.shape.rank <= 6 else { return .unsupported(reason: "rank \(node.type.shape.rank) > 6") }
        case .binary:
            guard node.type.shape.rank <= 6 else { return .unsupported(reason: "rank \(node.type.shape.rank) > 6") }
        case .matmul:
            guard node.type.shape.rank <= 5 else { return .unsupported(reason: "more than 3 batch axes") }
        case .lowRankUpdate:
            let rank = type(node.inputs[2]).shape[0]
            guard rank <= VulkanKernels.lowRankSharedFloats else { return .unsupported(reason: "LoRA rank \(rank) > \(VulkanKernels.lowRankSharedFloats)") }
            let factorBytes = node.inputs[2...].map { type($0).byteCount }.max() ?? 0
            guard factorBytes <= limit else {
                return .unsupported(reason: "a LoRA factor of \(factorBytes) bytes is past this device's maxStorageBufferRange of \(limit) bytes")
            }
        case .attention:
            let headDim = node.type.shape[3]
            guard 2 * 16 * headDim * 4 <= sharedMemory, headDim <= 256 else {
                return .unsupported(reason: "head dimension \(headDim) needs more shared memory than the device has")
            }
        case .cast:
            let source = type(node.inputs[0]).dtype
            if source.isBlockQuantized {
                guard node.type.dtype == .float32 else { return .unsupported(reason: "\(source.name) is widened to F32 only") }
            } else if !DType.matrixTypes.union([.int32, .int64]).contains(source) {
                return .unsupported(reason: "casting from \(source.name) is not implemented")
            }
        case .embedding:
            switch graph.nodes[node.inputs[1]].op {
            case .input, .parameter: break
            default: return .unsupported(reason: "ids must be a graph input or parameter (they are range-checked on the host)")
            }
        default:
            break
        }
        // Tensors past one binding: matmul, the LoRA ops and embedding tables split their
        // operands into windows; the embedding's ids and output must fit; nothing else splits.
        let touched: [Int]
        switch node.op {
        case .matmul, .lowRankUpdate, .topKAbsSum, .lowRankTopKAbsSum, .reshape, .input, .parameter: touched = []
        case .embedding: touched = [node.id, node.inputs[1]]
        default: touched = [node.id] + node.inputs
        }
        if let large = touched.first(where: { type($0).byteCount > limit }) {
            return .unsupported(reason: "\(type(large)) (\(type(large).byteCount) bytes) is past this device's maxStorageBufferRange of \(limit) bytes; only matmul, the LoRA ops and embedding tables split their operands so far")
        }
        return .supported
    }
}

#endif
