// Built only where the Vulkan headers are installed; see VulkanBackendPlugin.swift.
#if canImport(CVulkan)
import CVulkan
import Foundation
import LoRAFuse

/// A tensor resident on the Vulkan device.
final class VulkanTensorBuffer: BackendBuffer, @unchecked Sendable {
    let type: TensorType
    let range: VulkanRange
    let arena: VulkanArena
    init(type: TensorType, range: VulkanRange, arena: VulkanArena) {
        self.type = type
        self.range = range
        self.arena = arena
    }
}

/// The Vulkan compute backend: every graph op as a GLSL kernel (SPIR-V built from
/// Shaders/), the whole graph recorded into one command buffer and submitted once,
/// pipelines created once per (shader, specialization) and weights uploaded once.
public final class VulkanBackend: Backend, @unchecked Sendable {
    /// Which matmul kernel to use: register blocking without shared memory (fastest on
    /// lavapipe, a CPU device) or shared-memory tiles (real GPUs). `automatic` picks by device type.
    public enum MatmulVariant: String, Sendable, CaseIterable {
        /// `texel` on CPU devices, `tiled` on GPUs; `LORAFUSE_VULKAN_MATMUL` overrides.
        case automatic
        /// Register blocks per invocation, no shared memory; vec4 loads for the Linear layout.
        case registers
        /// `registers` with the Linear layout's operands read through uniform texel buffers:
        /// lavapipe gathers a texel fetch for 8 lanes at once, where each storage-buffer load
        /// is a per-lane loop.
        case texel
        /// Shared-memory tiles with register blocking (real GPUs).
        case tiled
    }

    /// Every setting of the backend, read from the environment in one place
    /// (`fromEnvironment`) or built in code, so tests run non-default paths in one process.
    public struct Configuration: Sendable, Hashable {
        /// Outputs per invocation (rows × columns) of the vec4 and texel matmuls.
        public struct Block: Sendable, Hashable {
            public var rows: Int
            public var columns: Int
            public init(rows: Int, columns: Int) {
                self.rows = rows
                self.columns = columns
            }
        }

        /// `LORAFUSE_VULKAN_MATMUL`: texel, registers or tiled (default: by device type).
        public var matmulVariant: MatmulVariant = .automatic
        /// `LORAFUSE_VULKAN_BLOCK`: outputs per invocation each way of the `registers`
        /// matmul (12 was the best of 8/12/16 on lavapipe).
        public var registerBlock = 12
        /// `LORAFUSE_VULKAN_VEC4_BLOCK=RxC`: a fixed block for the vec4 and texel matmuls
        /// instead of the per-shape choice.
        public var vec4Block: Block?
        /// `LORAFUSE_VULKAN_ATTENTION_QUERIES`: query rows per invocation of the texel
        /// attention (8: 16 is faster on lavapipe but LLVM takes minutes to compile it).
        public var attentionQueries = 8
        /// `LORAFUSE_VULKAN_TRACE=1`: report each pipeline build on standard error.
        public var tracePipelines = false
        /// `LORAFUSE_VULKAN_DISABLE_OPS=kind,kind`: op families this backend refuses, so a
        /// `BackendScheduler` runs them as their decomposition or on the CPU backend (to
        /// test the fallback, or to step around a broken kernel).
        public var disabledOps: Set<OpKind> = []
        /// Move data through staging buffers and recorded copies even on unified memory,
        /// as on a discrete GPU, so that path is tested on lavapipe too.
        public var forceStaging = false
        /// Lowers the bytes one binding may span below maxStorageBufferRange (tests use it
        /// to run the splitting paths on small tensors).
        public var bindingLimit: Int?
        /// `LORAFUSE_VULKAN_HOST_IMPORT=0` turns off importing weights from memory-mapped files
        /// on unified memory (VK_EXT_external_memory_host); they are then copied.
        public var importHostMemory = true
        /// Tensors smaller than this are copied even where host import is on (LoRA factors and
        /// vectors: a page mapping each would cost more than the copy).
        public var hostImportMinimumBytes = 1 << 20
        /// `--max-device-memory`, `LORAFUSE_VULKAN_MAX_DEVICE_MEMORY`: bytes of device memory
        /// for weights and activations; nil: what the device reports as available (VK_EXT_memory_budget,
        /// else the device-local heaps) less 10 %. Weights past it are streamed (README, "Memory").
        public var maxDeviceMemory: Int?
        /// `LORAFUSE_VULKAN_TRANSFER_QUEUE=automatic|off|compute`: where streamed weights are
        /// copied when they go through staging (discrete GPUs). See `TransferQueue`.
        public var transferQueue: TransferQueue = .automatic

        public init(matmulVariant: MatmulVariant = .automatic, forceStaging: Bool = false, bindingLimit: Int? = nil,
                    disabledOps: Set<OpKind> = []) {
            self.matmulVariant = matmulVariant
            self.forceStaging = forceStaging
            self.bindingLimit = bindingLimit
            self.disabledOps = disabledOps
        }

        /// Defaults overridden by the `LORAFUSE_VULKAN_*` variables (README, "Environment").
        public static var fromEnvironment: Configuration {
            var configuration = Configuration()
            if let variant = TuningEnvironment.value("LORAFUSE_VULKAN_MATMUL", { MatmulVariant(rawValue: $0).flatMap { $0 == .automatic ? nil : $0 } }) {
                configuration.matmulVariant = variant
            }
            if let block = TuningEnvironment.integer("LORAFUSE_VULKAN_BLOCK", in: 1...32) { configuration.registerBlock = block }
            configuration.vec4Block = TuningEnvironment.value("LORAFUSE_VULKAN_VEC4_BLOCK") { text -> Block? in
                let parts = text.split(separator: "x", omittingEmptySubsequences: false).map { Int($0) }
                guard parts.count == 2, let rows = parts[0], let columns = parts[1], (1...32).contains(rows), (1...32).contains(columns) else { return nil }
                return Block(rows: rows, columns: columns)
            }
            if let queries = TuningEnvironment.integer("LORAFUSE_VULKAN_ATTENTION_QUERIES", in: 1...24) { configuration.attentionQueries = queries }
            configuration.tracePipelines = TuningEnvironment.flag("LORAFUSE_VULKAN_TRACE") ?? false
            configuration.importHostMemory = TuningEnvironment.flag("LORAFUSE_VULKAN_HOST_IMPORT") ?? true
            if let queue = TuningEnvironment.value("LORAFUSE_VULKAN_TRANSFER_QUEUE", { TransferQueue(rawValue: $0) }) {
                configuration.transferQueue = queue
            }
            configuration.maxDeviceMemory = TuningEnvironment.value("LORAFUSE_VULKAN_MAX_DEVICE_MEMORY") { ByteSize.parse($0).flatMap { $0 > 0 ? $0 : nil } }
            if let ops = TuningEnvironment.value("LORAFUSE_VULKAN_DISABLE_OPS", { text -> Set<OpKind>? in
                var kinds = Set<OpKind>()
                for name in text.split(separator: ",") {
                    guard let kind = OpKind(rawValue: name.trimmingCharacters(in: .whitespaces)) else { return nil }
                    kinds.insert(kind)
                }
                return kinds
            }) {
                configuration.disabledOps = ops
            }
            return configuration
        }
    }

    /// Where a streamed execution copies the next segment's weights from staging into the
    /// device buffer it will read them from.
    public enum TransferQueue: String, Sendable, CaseIterable {
        /// On a queue of a transfer-only family (a copy engine, which discrete GPUs have) so
        /// the copies run beside the compute; in the compute submissions where there is none.
        case automatic
        /// Always in the compute submissions, behind a barrier.
        case off
        /// As a separate submission on the compute queue that signals a semaphore the compute
        /// submission waits for: the dedicated queue's synchronisation, on devices with one
        /// queue family (lavapipe), for tests.
        case compute
    }

    public let name = "vulkan"
    public let device: DeviceInfo
    public let configuration: Configuration
    public var capabilities: BackendCapabilities {
        BackendCapabilities(ops: Set(OpKind.allCases).subtracting(configuration.disabledOps), weightTypes: DType.linearWeightTypes)
    }
    public var matmulVariant: MatmulVariant { configuration.matmulVariant }
    let context: VulkanDevice
    private let lock = NSLock()

    /// A resident weight: its device range, what keeps that memory (the arena of its copy, or
    /// for an imported one the buffer and the tensor whose mapped pages it reads), and how many
    /// `ResidentWeights` hold it (it is dropped when the count reaches zero, and the memory is
    /// freed when nothing else holds it).
    private final class ResidentWeight {
        let range: VulkanRange
        let owner: AnyObject
        let source: HostTensor?
        var holders = 0
        init(range: VulkanRange, owner: AnyObject, source: HostTensor? = nil) {
            self.range = range
            self.owner = owner
            self.source = source
        }
        /// Imported: the device reads the file's pages; no device memory was allocated.
        var isImported: Bool { source != nil }
    }
    private var resident: [WeightHandle: ResidentWeight] = [:]

    public init(deviceIndex: Int = 0, configuration: Configuration = .fromEnvironment) throws {
        let instance = VulkanInstance.shared
        if let failure = instance.failure { throw BackendError.unavailable(name: "vulkan", reason: failure) }
        guard instance.physicalDevices.indices.contains(deviceIndex) else {
            throw BackendError.noSuchDevice(backend: "vulkan", index: deviceIndex, count: instance.physicalDevices.count)
        }
        let physical = instance.physicalDevices[deviceIndex]
        context = try VulkanDevice(instance: instance, physicalDevice: physical, forceStaging: configuration.forceStaging,
                                   bindingLimit: configuration.bindingLimit, tracePipelines: configuration.tracePipelines,
                                   transferQueue: configuration.transferQueue)
        device = instance.describe(physical, index: deviceIndex)
        self.configuration = configuration
    }

    /// The environment's configuration with these settings changed, for tests and tools
    /// (`.automatic` keeps the environment's variant, as it always did).
    public convenience init(deviceIndex: Int = 0, matmulVariant: MatmulVariant = .automatic, forceStaging: Bool = false,
                            bindingLimit: Int? = nil) throws {
        var configuration = Configuration.fromEnvironment
        if matmulVariant != .automatic { configuration.matmulVariant = matmulVariant }
        configuration.forceStaging = forceStaging
        configuration.bindingLimit = bindingLimit
        try self.init(deviceIndex: deviceIndex, configuration: configuration)
    }

    /// The variant `automatic` resolves to on this device.
    public var effectiveMatmulVariant: MatmulVariant {
        if matmulVariant != .automatic { return matmulVariant }
        return context.isCPUDevice ? .texel : .tiled
    }

    /// Whether tensors are written in place (unified memory) rather than through staging copies.
    public var usesUnifiedMemory: Bool { context.unifiedMemory }
    /// Whether streamed weights are copied in submissions of their own (a transfer-only
    /// queue, or `.compute`); only where weights go through staging.
    public var copiesOnTransferQueue: Bool { !context.unifiedMemory && context.transfer != nil }

    // MARK: Buffers

    public func upload(_ tensor: HostTensor) throws -> any BackendBuffer {
        try lock.withLock {
            let arena = VulkanArena(device: context, hostVisible: false, expectedBytes: tensor.byteCount)
            let range = try arena.allocate(tensor.byteCount)
            try writeHost(tensor, to: range)
            return VulkanTensorBuffer(type: tensor.type, range: range, arena: arena)
        }
    }

    public func download(_ buffer: any BackendBuffer) throws -> HostTensor {
        guard let buffer = buffer as? VulkanTensorBuffer else { throw BackendError.foreignBuffer(backend: name) }
        return try lock.withLock { try readHost(buffer.range, type: buffer.type) }
    }

    /// Copies host bytes into a device range: directly when mapped, else via a staging copy.
    func writeHost(_ tensor: HostTensor, to range: VulkanRange) throws {
        if context.unifiedMemory, let mapped = range.buffer.mapped {
            tensor.withUnsafeBytes { bytes in
                if let base = bytes.baseAddress { (mapped + range.offset).copyMemory(from: base, byteCount: bytes.count) }
            }
            return
        }
        let staging = try VulkanBuffer(device: context, size: max(tensor.byteCount, 4), hostVisible: true)
        tensor.withUnsafeBytes { bytes in
            if let base = bytes.baseAddress { staging.mapped!.copyMemory(from: base, byteCount: bytes.count) }
        }
        let recorder = try VulkanCommandRecorder(device: context, maximumDispatches: 1, timestamps: 0)
        recorder.copy(from: VulkanRange(buffer: staging, offset: 0, size: tensor.byteCount), to: range, size: tensor.byteCount)
        _ = try recorder.submitAndWait()
    }

    func readHost(_ range: VulkanRange, type: TensorType) throws -> HostTensor {
        if context.unifiedMemory, let mapped = range.buffer.mapped {
            return HostTensor(shape: type.shape, dtype: type.dtype) { buffer in
                if let base = buffer.baseAddress { base.copyMemory(from: mapped + range.offset, byteCount: buffer.count) }
            }
        }
        let staging = try VulkanBuffer(device: context, size: max(type.byteCount, 4), hostVisible: true)
        let recorder = try VulkanCommandRecorder(device: context, maximumDispatches: 1, timestamps: 0)
        recorder.copy(from: range, to: VulkanRange(buffer: staging, offset: 0, size: type.byteCount), size: type.byteCount)
        _ = try recorder.submitAndWait()
        return HostTensor(shape: type.shape, dtype: type.dtype) { buffer in
            if let base = buffer.baseAddress { base.copyMemory(from: staging.mapped!, byteCount: buffer.count) }
        }
    }

    // MARK: Weights

    /// The bytes of device memory this backend plans with: `maxDeviceMemory`, else what the
    /// device reports as available (VK_EXT_memory_budget, else its device-local heaps) less 10 %.
    public var deviceBudget: Int {
        if let bytes = configuration.maxDeviceMemory { return bytes }
        let (total, free) = context.deviceLocalMemory()
        let available = free ?? total
        return available > 0 ? available / 10 * 9 : Int.max
    }

    /// Uploads the weights not yet resident into one arena (allocated before anything is
    /// written: a set that does not fit fails whole, with nothing left behind).
    ///
    /// Under the device budget: when everything asked for fits in three quarters of it (the
    /// rest left for activations), all of it is made resident. Otherwise the smallest sets
    /// first (LoRA factors, AutoLoRA mergers), then the others' tensors in order, until half
    /// the budget is held; the rest stays on the host and each execution streams it through
    /// two buffers in the other half (`streamedBytes` says how much).
    public func makeResident(_ parts: [(set: WeightSet, handles: [WeightHandle])],
                             progress: (@Sendable (Int, Int) -> Void)?) throws -> ResidentWeights {
        try lock.withLock {
            var handles: [WeightHandle] = []
            var seen = Set<WeightHandle>()
            var fresh: [(WeightHandle, HostTensor)] = []
            var bytes = 0
            let aligned = context.storageAligned
            let ordered = parts.map { part in (part, part.handles.reduce(0) { $0 + part.set.tensor($1).byteCount }) }
            let budget = deviceBudget
            let held = residentBytes
            // Unified memory with host import: weights in mapped files are read in place and
            // cost no device memory; only the rest is weighed against the budget.
            let asked = ordered.reduce(0) { $0 + $1.1 }
            var done = 0
            for ((set, list), _) in ordered {
                for handle in list where resident[handle] == nil {
                    let tensor = set.tensor(handle)
                    if let weight = importWeight(tensor) {
                        resident[handle] = weight
                        done += tensor.byteCount
                        progress?(done, asked)
                    }
                }
            }
            let requested = ordered.reduce(0) { total, entry in
                total + entry.0.handles.filter { resident[$0] == nil }.reduce(0) { $0 + entry.0.set.tensor($1).byteCount }
            }
            let fitsWhole = requested <= (budget - held) / 4 * 3
            var streamed = 0, planned = held
            for ((set, list), _) in fitsWhole ? ordered : ordered.sorted(by: { $0.1 < $1.1 }) {
                for handle in list where seen.insert(handle).inserted {
                    let tensor = set.tensor(handle)
                    if resident[handle] == nil {
                        guard fitsWhole || planned + aligned(tensor.byteCount) <= budget / 2 else {
                            streamed += tensor.byteCount
                            continue
                        }
                        planned += aligned(tensor.byteCount)
                        fresh.append((handle, tensor))
                    }
                    handles.append(handle)
                    bytes += tensor.byteCount
                }
            }
            let expected = fresh.reduce(0) { $0 + aligned($1.1.byteCount) }
            let arena = VulkanArena(device: context, hostVisible: false, expectedBytes: expected)
            let ranges = try fresh.map { try arena.allocate($0.1.byteCount) }
            for ((_, tensor), range) in zip(fresh, ranges) {
                try writeHost(tensor, to: range)
                done += tensor.byteCount
                progress?(done, asked)
            }
            progress?(asked, asked)
            for ((handle, _), range) in zip(fresh, ranges) { resident[handle] = ResidentWeight(range: range, owner: arena) }
            for handle in handles { resident[handle]!.holders += 1 }
            let allocated = ranges.reduce(0) { $0 + $1.size }
            return ResidentWeights(backend: name, sets: parts.map(\.set.name), handles: handles, byteCount: bytes,
                                   allocatedBytes: allocated, streamedBytes: streamed) { [weak self] in self?.drop(handles) }
        }
    }

    private func drop(_ handles: [WeightHandle]) {
        lock.withLock {
            for handle in handles {
                guard let entry = resident[handle] else { continue }
                entry.holders -= 1
                if entry.holders == 0 { resident[handle] = nil }
            }
        }
    }

    /// The device copy of a resident weight (call with the lock held).
    func residentRange(_ handle: WeightHandle) -> VulkanRange? { resident[handle]?.range }

    /// Bytes of device memory the resident weights occupy, imported ones not counted (call
    /// with the lock held).
    var residentBytes: Int { resident.values.reduce(0) { $0 + ($1.isImported ? 0 : $1.range.size) } }

    /// Whether weights in memory-mapped files are imported rather than copied: unified memory,
    /// VK_EXT_external_memory_host, and `importHostMemory` on.
    public var importsHostMemory: Bool {
        context.unifiedMemory && context.hostImportAlignment != nil && configuration.importHostMemory
    }

    /// `tensor` imported in place when it lies in a mapped file and its start suits a storage
    /// binding (the pages around it are imported); nil to copy it instead.
    private func importWeight(_ tensor: HostTensor) -> ResidentWeight? {
        guard importsHostMemory, let pageSize = context.hostImportAlignment, tensor.storage.isFileMapping,
              tensor.byteCount >= configuration.hostImportMinimumBytes else { return nil }
        let start = Int(bitPattern: tensor.storage.baseAddress) + tensor.byteOffset
        // A start off the binding alignment is bound from the aligned byte below it, the rest an
        // element offset a matmul applies (whole elements; block rows cannot be split so).
        let leading = start % context.windowAlignment
        guard leading == 0 || (!tensor.dtype.isBlockQuantized && leading % tensor.dtype.byteSize == 0) else { return nil }
        let first = start / pageSize * pageSize
        let end = (start + tensor.byteCount + pageSize - 1) / pageSize * pageSize
        guard let pointer = UnsafeRawPointer(bitPattern: first),
              let buffer = VulkanBuffer(device: context, importing: pointer, size: end - first) else { return nil }
        let range = VulkanRange(buffer: buffer, offset: start - leading - first,
                                size: min((leading + tensor.byteCount + 3) & ~3, end - start + leading), leading: leading)
        return ResidentWeight(range: range, owner: buffer, source: tensor)
    }

    /// The device-local heaps, what VK_EXT_memory_budget says is free, and the weights held.
    public func memory() -> BackendMemory {
        let (total, free) = context.deviceLocalMemory()
        // Copies are allocated; imported weights are held but read in place.
        let (held, allocated) = lock.withLock {
            (resident.values.reduce(0) { $0 + $1.range.size }, residentBytes)
        }
        return BackendMemory(total: total, free: free, residentWeightBytes: held, allocatedWeightBytes: allocated, budget: deviceBudget)
    }

    // MARK: Execution

    public func execute(_ graph: Graph, inputs: [String: HostTensor], options: ExecutionOptions) throws -> ExecutionResult {
        try validate(graph, inputs: inputs)
        return try lock.withLock {
            try VulkanGraphExecution(backend: self, graph: graph, inputs: inputs, options: options).run()
        }
    }
}

#endif
