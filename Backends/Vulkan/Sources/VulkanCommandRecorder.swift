// Built only where the Vulkan headers are installed; see VulkanBackendPlugin.swift.
#if canImport(CVulkan)
import CVulkan
import Foundation
import LoRAFuse

/// Records a whole graph into one command buffer: one dispatch per op, a compute→compute
/// memory barrier after each, optional timestamps; then submits once and waits.
final class VulkanCommandRecorder {
    let device: VulkanDevice
    let commandBuffer: VkCommandBuffer
    /// Descriptor pools sized for the expected dispatches; another is added when the last one
    /// runs out (ops split into windows can dispatch more than the estimate).
    private var descriptorPools: [VkDescriptorPool?]
    private let poolSizes: [VkDescriptorPoolSize]
    private let poolSets: Int
    private var queryPool: VkQueryPool?
    private var queryCount: UInt32 = 0
    private(set) var timestampLabels: [Int] = []
    /// Scratch buffers kernels allocated while recording, kept until the recorder goes.
    private var retained: [AnyObject] = []

    func retain(_ object: AnyObject) { retained.append(object) }
    /// Texel-buffer views made for dispatches, destroyed with the recorder.
    private var bufferViews: [VkBufferView?] = []

    /// The queue this recorder submits to and the pool its command buffer comes from.
    private let queue: VkQueue
    private let commandPool: VkCommandPool

    /// `transfer`: record copies only, for that queue (no dispatches, no timestamps).
    init(device: VulkanDevice, maximumDispatches: Int, timestamps: Int, transfer: VulkanTransferQueue? = nil) throws {
        self.device = device
        queue = transfer?.queue ?? device.queue
        commandPool = transfer?.commandPool ?? device.commandPool
        let functions = device.functions
        let sets = max(1, maximumDispatches)
        poolSizes = [VkDescriptorPoolSize(type: VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, descriptorCount: UInt32(sets * 11)),
                     VkDescriptorPoolSize(type: VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, descriptorCount: UInt32(sets * 2))]
        poolSets = sets
        descriptorPools = transfer == nil ? [try Self.makeDescriptorPool(device, sizes: poolSizes, sets: sets)] : []

        var allocateInfo = VkCommandBufferAllocateInfo()
        allocateInfo.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO
        allocateInfo.commandPool = commandPool
        allocateInfo.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY
        allocateInfo.commandBufferCount = 1
        var commandBuffer: VkCommandBuffer?
        try check(functions.vkAllocateCommandBuffers(device.device, &allocateInfo, &commandBuffer), "vkAllocateCommandBuffers")
        self.commandBuffer = commandBuffer!
        var beginInfo = VkCommandBufferBeginInfo()
        beginInfo.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO
        beginInfo.flags = VkCommandBufferUsageFlags(VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT.rawValue)
        try check(functions.vkBeginCommandBuffer(commandBuffer, &beginInfo), "vkBeginCommandBuffer")

        if timestamps > 0 && device.timestampsSupported && transfer == nil {
            var queryInfo = VkQueryPoolCreateInfo()
            queryInfo.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO
            queryInfo.queryType = VK_QUERY_TYPE_TIMESTAMP
            queryInfo.queryCount = UInt32(timestamps + 1)
            var queries: VkQueryPool?
            try check(functions.vkCreateQueryPool(device.device, &queryInfo, nil, &queries), "vkCreateQueryPool")
            queryPool = queries
            functions.vkCmdResetQueryPool(commandBuffer, queries, 0, UInt32(timestamps + 1))
            writeTimestamp(label: -1)
        }
    }

    deinit {
        let functions = device.functions
        for view in bufferViews { functions.vkDestroyBufferView(device.device, view, nil) }
        if let queryPool { functions.vkDestroyQueryPool(device.device, queryPool, nil) }
        for pool in descriptorPools { functions.vkDestroyDescriptorPool(device.device, pool, nil) }
        var buffer: VkCommandBuffer? = commandBuffer
        functions.vkFreeCommandBuffers(device.device, commandPool, 1, &buffer)
    }

    /// Marks the end of the work for node `label` (timestamps are taken between marks).
    func writeTimestamp(label: Int) {
        guard let queryPool else { return }
        device.functions.vkCmdWriteTimestamp(commandBuffer, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queryPool, queryCount)
        queryCount += 1
        timestampLabels.append(label)
    }

    /// Binds `buffers` to bindings 0…n−1 (the pipeline's texel bindings as views of format
    /// `texelFormats[binding]`, whose ranges the caller aligned), pushes `constants`,
    /// dispatches `groups`.
    func dispatch<Constants: VulkanPushConstants>(_ pipeline: VulkanPipeline, _ buffers: [VulkanRange], constants: Constants,
                                                  groups: (Int, Int, Int), texelFormats: [Int: VkFormat] = [:]) throws {
        // The kernel's interface comes from its SPIR-V (Generated/VulkanKernel.swift); a call
        // that disagrees with it is a bug in the caller, reported before anything is recorded.
        guard Constants.self == pipeline.kernel.constants, buffers.count == pipeline.bindingCount,
              Set(texelFormats.keys) == pipeline.texelBindings else {
            throw BackendError.deviceFailure(backend: "vulkan", reason: "\(pipeline.name) dispatched with \(Constants.self) and "
                + "\(buffers.count) buffers (texel bindings \(texelFormats.keys.sorted())); the kernel takes \(pipeline.kernel.constants), "
                + "\(pipeline.bindingCount) buffers, texel bindings \(pipeline.texelBindings.sorted())")
        }
        guard groups.0 > 0, groups.1 > 0, groups.2 > 0 else { return }
        let rangeLimit = device.bindingLimit
        if let large = buffers.enumerated().first(where: { texelFormats[$0.offset] == nil && $0.element.size > rangeLimit })?.element {
            throw BackendError.outOfMemory(backend: "vulkan", bytes: large.size,
                                           reason: "\(pipeline.name) would bind \(large.size) bytes, past maxStorageBufferRange (\(rangeLimit))")
        }
        let functions = device.functions
        let maximum = device.maxWorkGroupCount
        guard groups.0 <= maximum[0], groups.1 <= maximum[1], groups.2 <= maximum[2] else {
            throw BackendError.deviceFailure(backend: "vulkan", reason: "\(pipeline.name): \(groups) workgroups exceed the device limit \(maximum)")
        }
        var set = try allocateSet(pipeline.setLayout)
        let infos = buffers.map { VkDescriptorBufferInfo(buffer: $0.buffer.buffer, offset: VkDeviceSize($0.offset), range: VkDeviceSize($0.size)) }
        var views = [VkBufferView?](repeating: nil, count: buffers.count)
        for (binding, format) in texelFormats {
            views[binding] = try bufferView(buffers[binding], format: format)
        }
        infos.withUnsafeBufferPointer { infoPointer in
            views.withUnsafeBufferPointer { viewPointer in
                var writes = (0..<buffers.count).map { index -> VkWriteDescriptorSet in
                    var write = VkWriteDescriptorSet()
                    write.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET
                    write.dstSet = set
                    write.dstBinding = UInt32(index)
                    write.descriptorCount = 1
                    if texelFormats[index] != nil {
                        write.descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER
                        write.pTexelBufferView = viewPointer.baseAddress! + index
                    } else {
                        write.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
                        write.pBufferInfo = infoPointer.baseAddress! + index
                    }
                    return write
                }
                functions.vkUpdateDescriptorSets(device.device, UInt32(writes.count), &writes, 0, nil)
            }
        }
        functions.vkCmdBindPipeline(commandBuffer, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.pipeline)
        functions.vkCmdBindDescriptorSets(commandBuffer, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.layout, 0, 1, &set, 0, nil)
        if MemoryLayout<Constants>.size > 0 {
            withUnsafeBytes(of: constants) { bytes in
                functions.vkCmdPushConstants(commandBuffer, pipeline.layout, VkShaderStageFlags(VK_SHADER_STAGE_COMPUTE_BIT.rawValue),
                                             0, UInt32(bytes.count), bytes.baseAddress)
            }
        }
        functions.vkCmdDispatch(commandBuffer, UInt32(groups.0), UInt32(groups.1), UInt32(groups.2))
        barrier(from: VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                to: VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VkAccessFlagBits(VK_ACCESS_SHADER_READ_BIT.rawValue | VK_ACCESS_SHADER_WRITE_BIT.rawValue))
    }

    private static func makeDescriptorPool(_ device: VulkanDevice, sizes: [VkDescriptorPoolSize], sets: Int) throws -> VkDescriptorPool? {
        var poolInfo = VkDescriptorPoolCreateInfo()
        poolInfo.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO
        poolInfo.maxSets = UInt32(sets)
        poolInfo.poolSizeCount = UInt32(sizes.count)
        var pool: VkDescriptorPool?
        try sizes.withUnsafeBufferPointer { sizePointer in
            poolInfo.pPoolSizes = sizePointer.baseAddress
            try check(device.functions.vkCreateDescriptorPool(device.device, &poolInfo, nil, &pool), "vkCreateDescriptorPool")
        }
        return pool
    }

    /// A descriptor set of `layout` from the newest pool, or from a new pool when that one is
    /// spent (VK_ERROR_OUT_OF_POOL_MEMORY or VK_ERROR_FRAGMENTED_POOL).
    private func allocateSet(_ layout: VkDescriptorSetLayout) throws -> VkDescriptorSet? {
        var setLayout: VkDescriptorSetLayout? = layout
        if descriptorPools.isEmpty { descriptorPools.append(try Self.makeDescriptorPool(device, sizes: poolSizes, sets: poolSets)) }
        func allocate() -> (VkResult, VkDescriptorSet?) {
            var allocateInfo = VkDescriptorSetAllocateInfo()
            allocateInfo.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO
            allocateInfo.descriptorPool = descriptorPools.last!
            allocateInfo.descriptorSetCount = 1
            var set: VkDescriptorSet?
            let result = withUnsafePointer(to: &setLayout) { layoutPointer in
                allocateInfo.pSetLayouts = layoutPointer
                return device.functions.vkAllocateDescriptorSets(device.device, &allocateInfo, &set)
            }
            return (result, set)
        }
        var (result, set) = allocate()
        if result == VK_ERROR_OUT_OF_POOL_MEMORY || result == VK_ERROR_FRAGMENTED_POOL {
            descriptorPools.append(try Self.makeDescriptorPool(device, sizes: poolSizes, sets: poolSets))
            (result, set) = allocate()
        }
        try check(result, "vkAllocateDescriptorSets")
        return set
    }

    /// A uniform-texel-buffer view of `range` (offset aligned to minTexelBufferOffsetAlignment,
    /// size a whole number of texels), kept until the recorder goes.
    private func bufferView(_ range: VulkanRange, format: VkFormat) throws -> VkBufferView? {
        var info = VkBufferViewCreateInfo()
        info.sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO
        info.buffer = range.buffer.buffer
        info.format = format
        info.offset = VkDeviceSize(range.offset)
        info.range = VkDeviceSize(range.size)
        var view: VkBufferView?
        try check(device.functions.vkCreateBufferView(device.device, &info, nil, &view), "vkCreateBufferView")
        bufferViews.append(view)
        return view
    }

    /// 1-D work of `count` items in workgroups of `localSize`, folded into a 2-D grid
    /// (see `flat_workgroup()` in common.glsl).
    static func groups1D(_ count: Int, localSize: Int) -> (Int, Int, Int) {
        let total = (count + localSize - 1) / localSize
        if total <= 65535 { return (total, 1, 1) }
        return (65535, (total + 65534) / 65535, 1)
    }

    func copy(from source: VulkanRange, to destination: VulkanRange, size: Int) {
        var region = VkBufferCopy(srcOffset: VkDeviceSize(source.offset), dstOffset: VkDeviceSize(destination.offset), size: VkDeviceSize(size))
        device.functions.vkCmdCopyBuffer(commandBuffer, source.buffer.buffer, destination.buffer.buffer, 1, &region)
    }

    func barrier(from sourceStage: VkPipelineStageFlagBits, _ sourceAccess: VkAccessFlagBits,
                 to destinationStage: VkPipelineStageFlagBits, _ destinationAccess: VkAccessFlagBits) {
        var memoryBarrier = VkMemoryBarrier()
        memoryBarrier.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER
        memoryBarrier.srcAccessMask = VkAccessFlags(sourceAccess.rawValue)
        memoryBarrier.dstAccessMask = VkAccessFlags(destinationAccess.rawValue)
        device.functions.vkCmdPipelineBarrier(commandBuffer, VkPipelineStageFlags(sourceStage.rawValue),
                                              VkPipelineStageFlags(destinationStage.rawValue), 0, 1, &memoryBarrier, 0, nil, 0, nil)
    }

    /// Ends recording, submits once, waits for completion; returns seconds per timestamp label.
    func submitAndWait() throws -> [(label: Int, seconds: Double)] {
        let submission = try submit()
        try submission.wait()
        return try timestamps()
    }

    /// Ends recording and submits without waiting: the submission keeps this recorder (its
    /// command buffer and descriptor sets) alive until it is waited for. `signalling`: a
    /// semaphore the submission signals when done; `waitingFor`: one its compute work waits
    /// for (which also makes the writes before that signal visible to it). The recorder keeps
    /// both alive.
    func submit(signalling: VulkanSemaphore? = nil, waitingFor: VulkanSemaphore? = nil) throws -> VulkanSubmission {
        let functions = device.functions
        try check(functions.vkEndCommandBuffer(commandBuffer), "vkEndCommandBuffer")
        var fenceInfo = VkFenceCreateInfo()
        fenceInfo.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO
        var fence: VkFence?
        try check(functions.vkCreateFence(device.device, &fenceInfo, nil, &fence), "vkCreateFence")
        var buffer: VkCommandBuffer? = commandBuffer
        for semaphore in [signalling, waitingFor].compactMap({ $0 }) { retain(semaphore) }
        var signal: VkSemaphore? = signalling?.semaphore
        var wait: VkSemaphore? = waitingFor?.semaphore
        var waitStage = VkPipelineStageFlags(VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT.rawValue)
        do {
            try withUnsafePointer(to: &buffer) { bufferPointer in
                var submit = VkSubmitInfo()
                submit.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO
                submit.commandBufferCount = 1
                submit.pCommandBuffers = bufferPointer
                try withUnsafePointer(to: &signal) { signalPointer in
                    try withUnsafePointer(to: &wait) { waitPointer in
                        try withUnsafePointer(to: &waitStage) { stagePointer in
                            if signalling != nil {
                                submit.signalSemaphoreCount = 1
                                submit.pSignalSemaphores = signalPointer
                            }
                            if waitingFor != nil {
                                submit.waitSemaphoreCount = 1
                                submit.pWaitSemaphores = waitPointer
                                submit.pWaitDstStageMask = stagePointer
                            }
                            try check(functions.vkQueueSubmit(queue, 1, &submit, fence), "vkQueueSubmit")
                        }
                    }
                }
            }
        } catch {
            functions.vkDestroyFence(device.device, fence, nil)
            throw error
        }
        return VulkanSubmission(recorder: self, fence: fence!)
    }

    /// Seconds per timestamp label, once the submission has completed.
    func timestamps() throws -> [(label: Int, seconds: Double)] {
        guard let queryPool, queryCount > 1 else { return [] }
        var stamps = [UInt64](repeating: 0, count: Int(queryCount))
        try check(device.functions.vkGetQueryPoolResults(device.device, queryPool, 0, queryCount, stamps.count * 8, &stamps, 8,
                                                         VkQueryResultFlags(VK_QUERY_RESULT_64_BIT.rawValue | VK_QUERY_RESULT_WAIT_BIT.rawValue)),
                  "vkGetQueryPoolResults")
        let period = Double(device.limits.timestampPeriod) * 1e-9
        return (1..<stamps.count).map { (timestampLabels[$0], Double(stamps[$0] &- stamps[$0 - 1]) * period) }
    }
}

/// Work submitted to the queue: its fence, and the recorder it came from, kept alive until
/// the work is done (a submission dropped unwaited waits in its deinit).
/// A binary semaphore: one submission signals it, another waits for it.
final class VulkanSemaphore {
    let semaphore: VkSemaphore
    private let device: VulkanDevice

    init(device: VulkanDevice) throws {
        self.device = device
        var info = VkSemaphoreCreateInfo()
        info.sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO
        var semaphore: VkSemaphore?
        try check(device.functions.vkCreateSemaphore(device.device, &info, nil, &semaphore), "vkCreateSemaphore")
        self.semaphore = semaphore!
    }

    deinit { device.functions.vkDestroySemaphore(device.device, semaphore, nil) }
}

final class VulkanSubmission {
    let recorder: VulkanCommandRecorder
    private let fence: VkFence
    private var done = false

    init(recorder: VulkanCommandRecorder, fence: VkFence) {
        self.recorder = recorder
        self.fence = fence
    }

    /// Whether the device has finished it (no waiting).
    var isComplete: Bool {
        if done { return true }
        let device = recorder.device
        done = device.functions.vkGetFenceStatus(device.device, fence) == VK_SUCCESS
        return done
    }

    /// Blocks until the device has finished it.
    func wait() throws {
        guard !done else { return }
        let device = recorder.device
        var fence: VkFence? = self.fence
        try check(device.functions.vkWaitForFences(device.device, 1, &fence, VkBool32(VK_TRUE), UInt64.max), "vkWaitForFences")
        done = true
    }

    deinit {
        let device = recorder.device
        var fence: VkFence? = self.fence
        if !done { _ = device.functions.vkWaitForFences(device.device, 1, &fence, VkBool32(VK_TRUE), UInt64.max) }
        device.functions.vkDestroyFence(device.device, self.fence, nil)
    }
}

#endif
