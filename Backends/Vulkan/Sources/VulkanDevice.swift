// Built only where the Vulkan headers are installed; see VulkanBackendPlugin.swift.
#if canImport(CVulkan)
import CVulkan
import Foundation
import LoRAFuse

/// One buffer with its own memory, persistently mapped when host-visible.
final class VulkanBuffer {
    let buffer: VkBuffer
    let memory: VkDeviceMemory
    let size: Int
    let mapped: UnsafeMutableRawPointer?
    /// Strong: a buffer keeps its device alive (devices never hold buffers, so no cycle).
    private let device: VulkanDevice

    init(device: VulkanDevice, size: Int, hostVisible: Bool) throws {
        self.device = device
        self.size = size
        let functions = device.functions
        var info = VkBufferCreateInfo()
        info.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO
        info.size = VkDeviceSize(max(size, 16))
        info.usage = VkBufferUsageFlags(VK_BUFFER_USAGE_STORAGE_BUFFER_BIT.rawValue | VK_BUFFER_USAGE_TRANSFER_SRC_BIT.rawValue
                                        | VK_BUFFER_USAGE_TRANSFER_DST_BIT.rawValue | VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT.rawValue)
        info.sharingMode = VK_SHARING_MODE_EXCLUSIVE
        var buffer: VkBuffer?
        try check(functions.vkCreateBuffer(device.device, &info, nil, &buffer), "vkCreateBuffer(\(size) bytes)")
        var requirements = VkMemoryRequirements()
        functions.vkGetBufferMemoryRequirements(device.device, buffer, &requirements)
        guard let type = device.memoryType(bits: requirements.memoryTypeBits, hostVisible: hostVisible) else {
            functions.vkDestroyBuffer(device.device, buffer, nil)
            throw BackendError.outOfMemory(backend: "vulkan", bytes: size, reason: "no suitable memory type")
        }
        var allocation = VkMemoryAllocateInfo()
        allocation.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO
        allocation.allocationSize = requirements.size
        allocation.memoryTypeIndex = type
        var memory: VkDeviceMemory?
        let result = functions.vkAllocateMemory(device.device, &allocation, nil, &memory)
        guard result == VK_SUCCESS else {
            functions.vkDestroyBuffer(device.device, buffer, nil)
            throw BackendError.outOfMemory(backend: "vulkan", bytes: size, reason: VulkanError.name(of: result))
        }
        try check(functions.vkBindBufferMemory(device.device, buffer, memory, 0), "vkBindBufferMemory")
        var pointer: UnsafeMutableRawPointer?
        if device.isHostVisible(type) {
            try check(functions.vkMapMemory(device.device, memory, 0, VkDeviceSize(VK_WHOLE_SIZE), 0, &pointer), "vkMapMemory")
        }
        self.buffer = buffer!
        self.memory = memory!
        self.mapped = pointer
    }

    deinit {
        if mapped != nil { device.functions.vkUnmapMemory(device.device, memory) }
        device.functions.vkDestroyBuffer(device.device, buffer, nil)
        device.functions.vkFreeMemory(device.device, memory, nil)
    }
}

/// A byte range of a `VulkanBuffer` holding one tensor.
struct VulkanRange {
    let buffer: VulkanBuffer
    let offset: Int
    let size: Int
}

/// The logical device: queue, memory types, pipelines (created once and cached), command
/// pool, and the limits kernels are chosen by.
final class VulkanDevice {
    let functions: LFVulkanFunctions
    let physicalDevice: VkPhysicalDevice
    let device: VkDevice
    let queue: VkQueue
    let queueFamily: UInt32
    let properties: VkPhysicalDeviceProperties
    let commandPool: VkCommandPool
    /// Device-local memory the host can map (lavapipe, integrated GPUs, resizable BAR):
    /// tensors are written in place and no staging copies are recorded.
    let unifiedMemory: Bool
    let timestampsSupported: Bool
    private var pipelines: [PipelineKey: VulkanPipeline] = [:]

    private struct PipelineKey: Hashable {
        var kernel: VulkanKernel
        var specialization: [UInt32]
    }

    var limits: VkPhysicalDeviceLimits { properties.limits }
    var isCPUDevice: Bool { properties.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU }
    var storageAlignment: Int { max(256, Int(limits.minStorageBufferOffsetAlignment)) }
    /// The offset alignment binding windows start at (the device minimum, at least 4 bytes).
    var windowAlignment: Int { max(4, Int(limits.minStorageBufferOffsetAlignment)) }
    /// Where a texel-buffer view may start, and how many texels it may span.
    var texelAlignment: Int { max(16, Int(limits.minTexelBufferOffsetAlignment)) }
    var maxTexels: Int { Int(limits.maxTexelBufferElements) }
    /// The most bytes one binding may span: maxStorageBufferRange, or less when a test
    /// asks for it so the splitting paths run on small tensors.
    let bindingLimit: Int
    /// maxComputeWorkGroupCount as an array, read once.
    let maxWorkGroupCount: [Int]
    /// The device's memory types, read once.
    let memoryTypes: [VkMemoryType]

    init(instance: VulkanInstance, physicalDevice: VkPhysicalDevice, forceStaging: Bool = false, bindingLimit: Int? = nil,
         tracePipelines: Bool = false) throws {
        self.tracePipelines = tracePipelines
        var functions = instance.functions
        self.physicalDevice = physicalDevice
        var properties = VkPhysicalDeviceProperties()
        functions.vkGetPhysicalDeviceProperties(physicalDevice, &properties)
        self.properties = properties
        self.bindingLimit = min(Int(properties.limits.maxStorageBufferRange), bindingLimit ?? Int.max)
        self.maxWorkGroupCount = withUnsafeBytes(of: properties.limits.maxComputeWorkGroupCount) { $0.bindMemory(to: UInt32.self).map(Int.init) }
        var memoryProperties = VkPhysicalDeviceMemoryProperties()
        functions.vkGetPhysicalDeviceMemoryProperties(physicalDevice, &memoryProperties)
        self.memoryTypes = Self.memoryTypes(memoryProperties)

        var familyCount: UInt32 = 0
        functions.vkGetPhysicalDeviceQueueFamilyProperties(physicalDevice, &familyCount, nil)
        var families = [VkQueueFamilyProperties](repeating: VkQueueFamilyProperties(), count: Int(familyCount))
        functions.vkGetPhysicalDeviceQueueFamilyProperties(physicalDevice, &familyCount, &families)
        // Prefer a compute-only family (async compute on GPUs), else any family with compute.
        let computeBit = VK_QUEUE_COMPUTE_BIT.rawValue, graphicsBit = VK_QUEUE_GRAPHICS_BIT.rawValue
        guard let family = families.indices.first(where: { families[$0].queueFlags & computeBit != 0 && families[$0].queueFlags & graphicsBit == 0 })
                ?? families.indices.first(where: { families[$0].queueFlags & computeBit != 0 }) else {
            throw BackendError.unavailable(name: "vulkan", reason: "the device has no compute queue")
        }
        queueFamily = UInt32(family)
        timestampsSupported = families[family].timestampValidBits > 0 && properties.limits.timestampPeriod > 0

        var priority: Float = 1
        var queueInfo = VkDeviceQueueCreateInfo()
        queueInfo.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO
        queueInfo.queueFamilyIndex = queueFamily
        queueInfo.queueCount = 1
        var device: VkDevice?
        try withUnsafePointer(to: &priority) { priorityPointer in
            queueInfo.pQueuePriorities = priorityPointer
            try withUnsafePointer(to: &queueInfo) { queuePointer in
                var info = VkDeviceCreateInfo()
                info.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO
                info.queueCreateInfoCount = 1
                info.pQueueCreateInfos = queuePointer
                try check(functions.vkCreateDevice(physicalDevice, &info, nil, &device), "vkCreateDevice")
            }
        }
        if let missing = lf_vulkan_load_device(&functions, device) {
            throw BackendError.unavailable(name: "vulkan", reason: "the driver lacks \(String(cString: missing))")
        }
        self.functions = functions
        self.device = device!
        var queue: VkQueue?
        functions.vkGetDeviceQueue(device, queueFamily, 0, &queue)
        self.queue = queue!

        var poolInfo = VkCommandPoolCreateInfo()
        poolInfo.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO
        poolInfo.flags = VkCommandPoolCreateFlags(VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT.rawValue)
        poolInfo.queueFamilyIndex = queueFamily
        var pool: VkCommandPool?
        try check(functions.vkCreateCommandPool(device, &poolInfo, nil, &pool), "vkCreateCommandPool")
        commandPool = pool!

        let types = memoryTypes
        let wanted = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT.rawValue | VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT.rawValue
            | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT.rawValue
        unifiedMemory = !forceStaging && properties.deviceType != VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU
            && types.contains { $0.propertyFlags & wanted == wanted }
    }

    deinit {
        _ = functions.vkDeviceWaitIdle(device)
        pipelines.removeAll()
        functions.vkDestroyCommandPool(device, commandPool, nil)
        functions.vkDestroyDevice(device, nil)
    }

    /// The device-local heaps' sizes and, where VK_EXT_memory_budget is offered, the bytes
    /// still available in them (budget less usage, for every process).
    func deviceLocalMemory() -> (total: Int, free: Int?) {
        let functions = self.functions
        var extensionCount: UInt32 = 0
        _ = functions.vkEnumerateDeviceExtensionProperties(physicalDevice, nil, &extensionCount, nil)
        var extensions = [VkExtensionProperties](repeating: VkExtensionProperties(), count: Int(extensionCount))
        _ = functions.vkEnumerateDeviceExtensionProperties(physicalDevice, nil, &extensionCount, &extensions)
        let hasBudget = extensions.contains { properties in
            withUnsafeBytes(of: properties.extensionName) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) } == "VK_EXT_memory_budget"
        }
        var budget = VkPhysicalDeviceMemoryBudgetPropertiesEXT()
        budget.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT
        var properties = VkPhysicalDeviceMemoryProperties2()
        properties.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2
        withUnsafeMutablePointer(to: &budget) { budgetPointer in
            if hasBudget { properties.pNext = UnsafeMutableRawPointer(budgetPointer) }
            functions.vkGetPhysicalDeviceMemoryProperties2(physicalDevice, &properties)
            properties.pNext = nil
        }
        let memory = properties.memoryProperties
        let heaps = withUnsafeBytes(of: memory.memoryHeaps) { raw in
            (0..<Int(memory.memoryHeapCount)).map { raw.load(fromByteOffset: $0 * MemoryLayout<VkMemoryHeap>.stride, as: VkMemoryHeap.self) }
        }
        let budgets = withUnsafeBytes(of: budget.heapBudget) { Array($0.bindMemory(to: VkDeviceSize.self)) }
        let usages = withUnsafeBytes(of: budget.heapUsage) { Array($0.bindMemory(to: VkDeviceSize.self)) }
        var total = 0, free = 0
        for (index, heap) in heaps.enumerated() where heap.flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT.rawValue != 0 {
            total += Int(heap.size)
            free += Int(budgets[index]) - min(Int(usages[index]), Int(budgets[index]))
        }
        return (total, hasBudget ? free : nil)
    }

    static func memoryTypes(_ properties: VkPhysicalDeviceMemoryProperties) -> [VkMemoryType] {
        withUnsafeBytes(of: properties.memoryTypes) { raw in
            (0..<Int(properties.memoryTypeCount)).map {
                raw.load(fromByteOffset: $0 * MemoryLayout<VkMemoryType>.stride, as: VkMemoryType.self)
            }
        }
    }

    func isHostVisible(_ type: UInt32) -> Bool {
        memoryTypes[Int(type)].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT.rawValue != 0
    }

    /// Device-local memory for compute buffers (host-visible too with unified memory);
    /// host-visible coherent memory for staging.
    func memoryType(bits: UInt32, hostVisible: Bool) -> UInt32? {
        let types = memoryTypes
        let local = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT.rawValue
        let host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT.rawValue | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT.rawValue
        let preferences: [UInt32] = hostVisible || unifiedMemory ? [local | host, host] : [local, 0]
        for wanted in preferences {
            if let index = types.indices.first(where: { bits & (1 << $0) != 0 && types[$0].propertyFlags & wanted == wanted }) {
                return UInt32(index)
            }
        }
        return nil
    }

    /// The pipeline for `kernel` with `specialization` constants (as many as the shader
    /// declares), created once.
    func pipeline(_ kernel: VulkanKernel, specialization: [UInt32] = []) throws -> VulkanPipeline {
        let key = PipelineKey(kernel: kernel, specialization: specialization)
        if let cached = pipelines[key] { return cached }
        let start = DispatchTime.now().uptimeNanoseconds
        let created = try VulkanPipeline(device: self, kernel: kernel, specialization: specialization)
        pipelines[key] = created
        if tracePipelines {
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let label = "\(kernel)" + (specialization.isEmpty ? "" : "<\(specialization.map(String.init).joined(separator: ","))>")
            FileHandle.standardError.write(Data(String(format: "vulkan: pipeline %@ built in %.3f s\n", label, seconds).utf8))
        }
        return created
    }

    /// `LORAFUSE_VULKAN_TRACE=1` reports each pipeline build (they are slow on lavapipe).
    let tracePipelines: Bool
}

#endif
