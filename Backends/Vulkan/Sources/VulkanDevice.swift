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
    /// Host memory imported in place (never unmapped by this buffer).
    private(set) var imported = false
    /// Strong: a buffer keeps its device alive (devices never hold buffers, so no cycle).
    private let device: VulkanDevice

    /// `sharedWith`: the queue families that use the buffer, where more than one does (a
    /// streaming buffer the transfer queue writes and the compute queue reads); the buffer is
    /// then created concurrent, so neither needs an ownership transfer.
    init(device: VulkanDevice, size: Int, hostVisible: Bool, sharedWith families: [UInt32] = []) throws {
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
        let distinct = Array(Set(families)).sorted()
        try distinct.withUnsafeBufferPointer { familyPointer in
            if distinct.count > 1 {
                info.sharingMode = VK_SHARING_MODE_CONCURRENT
                info.queueFamilyIndexCount = UInt32(distinct.count)
                info.pQueueFamilyIndices = familyPointer.baseAddress
            }
            try check(functions.vkCreateBuffer(device.device, &info, nil, &buffer), "vkCreateBuffer(\(size) bytes)")
        }
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

    /// A buffer over host memory the device reads in place (VK_EXT_external_memory_host):
    /// `pointer` and `size` multiples of `device.hostImportAlignment`; the memory must stay
    /// valid while the buffer lives. Nil where the driver will not import it.
    init?(device: VulkanDevice, importing pointer: UnsafeRawPointer, size: Int) {
        guard device.hostImportAlignment != nil, let properties = device.functions.vkGetMemoryHostPointerPropertiesEXT else { return nil }
        let functions = device.functions
        var hostProperties = VkMemoryHostPointerPropertiesEXT()
        hostProperties.sType = VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT
        guard properties(device.device, VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT, pointer, &hostProperties) == VK_SUCCESS else { return nil }
        var external = VkExternalMemoryBufferCreateInfo()
        external.sType = VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO
        external.handleTypes = VkExternalMemoryHandleTypeFlags(VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT.rawValue)
        var info = VkBufferCreateInfo()
        info.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO
        info.size = VkDeviceSize(size)
        info.usage = VkBufferUsageFlags(VK_BUFFER_USAGE_STORAGE_BUFFER_BIT.rawValue | VK_BUFFER_USAGE_TRANSFER_SRC_BIT.rawValue
                                        | VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT.rawValue)
        info.sharingMode = VK_SHARING_MODE_EXCLUSIVE
        var buffer: VkBuffer?
        let created = withUnsafeMutablePointer(to: &external) { externalPointer -> VkResult in
            info.pNext = UnsafeRawPointer(externalPointer)
            return functions.vkCreateBuffer(device.device, &info, nil, &buffer)
        }
        guard created == VK_SUCCESS, let buffer else { return nil }
        var requirements = VkMemoryRequirements()
        functions.vkGetBufferMemoryRequirements(device.device, buffer, &requirements)
        let bits = requirements.memoryTypeBits & hostProperties.memoryTypeBits
        guard requirements.size <= VkDeviceSize(size), let type = (0..<32).first(where: { bits & (1 << $0) != 0 }) else {
            functions.vkDestroyBuffer(device.device, buffer, nil)
            return nil
        }
        var importInfo = VkImportMemoryHostPointerInfoEXT()
        importInfo.sType = VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT
        importInfo.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT
        importInfo.pHostPointer = UnsafeMutableRawPointer(mutating: pointer)
        var allocation = VkMemoryAllocateInfo()
        allocation.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO
        allocation.allocationSize = VkDeviceSize(size)
        allocation.memoryTypeIndex = UInt32(type)
        var memory: VkDeviceMemory?
        let allocated = withUnsafeMutablePointer(to: &importInfo) { importPointer -> VkResult in
            allocation.pNext = UnsafeRawPointer(importPointer)
            return functions.vkAllocateMemory(device.device, &allocation, nil, &memory)
        }
        guard allocated == VK_SUCCESS, let memory, functions.vkBindBufferMemory(device.device, buffer, memory, 0) == VK_SUCCESS else {
            if let memory { functions.vkFreeMemory(device.device, memory, nil) }
            functions.vkDestroyBuffer(device.device, buffer, nil)
            return nil
        }
        self.device = device
        self.size = size
        self.buffer = buffer
        self.memory = memory
        self.mapped = UnsafeMutableRawPointer(mutating: pointer)
        self.imported = true
    }

    deinit {
        if mapped != nil && !imported { device.functions.vkUnmapMemory(device.device, memory) }
        device.functions.vkDestroyBuffer(device.device, buffer, nil)
        device.functions.vkFreeMemory(device.device, memory, nil)
    }
}

/// A byte range of a `VulkanBuffer` holding one tensor.
struct VulkanRange {
    let buffer: VulkanBuffer
    let offset: Int
    let size: Int
    /// Bytes before the tensor's first byte: its value starts at `offset + leading`. Nonzero
    /// only for a weight imported in place whose start is not binding-aligned (safetensors data
    /// are 8-aligned); only a matmul's B and an embedding's table read such a range (as an
    /// element offset).
    var leading = 0
}

/// A queue streamed weights are copied on, with its family and command pool: a transfer-only
/// family's queue (`dedicated`), or the compute queue itself when a test asks for separate
/// copy submissions on a device that has no such family.
struct VulkanTransferQueue {
    let queue: VkQueue
    let family: UInt32
    let commandPool: VkCommandPool
    let dedicated: Bool
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
    /// Where streamed weights are copied from staging (VulkanStreamedExecution); nil: in the
    /// compute submissions themselves.
    let transfer: VulkanTransferQueue?
    private var pipelines: [PipelineKey: VulkanPipeline] = [:]

    private struct PipelineKey: Hashable {
        var kernel: VulkanKernel
        var specialization: [UInt32]
    }

    var limits: VkPhysicalDeviceLimits { properties.limits }
    var isCPUDevice: Bool { properties.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU }
    var storageAlignment: Int { max(256, Int(limits.minStorageBufferOffsetAlignment)) }
    /// `bytes` rounded up to `storageAlignment` (what a sub-allocated range occupies).
    func storageAligned(_ bytes: Int) -> Int { (bytes + storageAlignment - 1) / storageAlignment * storageAlignment }
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
    /// minImportedHostPointerAlignment where VK_EXT_external_memory_host is enabled, else nil.
    let hostImportAlignment: Int?

    init(instance: VulkanInstance, physicalDevice: VkPhysicalDevice, forceStaging: Bool = false, bindingLimit: Int? = nil,
         tracePipelines: Bool = false, transferQueue: VulkanBackend.TransferQueue = .automatic) throws {
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
        // A transfer-only family is a copy engine (a DMA queue on discrete GPUs) that runs
        // beside the compute queue; devices with one family (lavapipe) have none.
        let transferBit = VK_QUEUE_TRANSFER_BIT.rawValue
        let copyFamily = transferQueue == .automatic
            ? families.indices.first { $0 != family && families[$0].queueFlags & transferBit != 0
                && families[$0].queueFlags & (computeBit | graphicsBit) == 0 && families[$0].queueCount > 0 }.map(UInt32.init)
            : nil
        timestampsSupported = families[family].timestampValidBits > 0 && properties.limits.timestampPeriod > 0

        // VK_EXT_external_memory_host where offered: weights in a memory-mapped file are then
        // imported on unified memory instead of copied (VulkanBackend.makeResident).
        let hostImport = Self.extensions(functions, physicalDevice).contains("VK_EXT_external_memory_host")
        var importAlignment: Int?
        if hostImport {
            var hostProperties = VkPhysicalDeviceExternalMemoryHostPropertiesEXT()
            hostProperties.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT
            var properties2 = VkPhysicalDeviceProperties2()
            properties2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2
            withUnsafeMutablePointer(to: &hostProperties) { pointer in
                properties2.pNext = UnsafeMutableRawPointer(pointer)
                functions.vkGetPhysicalDeviceProperties2(physicalDevice, &properties2)
                properties2.pNext = nil
            }
            let alignment = Int(hostProperties.minImportedHostPointerAlignment)
            if alignment > 0 && alignment & (alignment - 1) == 0 && alignment <= 1 << 16 { importAlignment = alignment }
        }

        var priority: Float = 1
        var device: VkDevice?
        let queueFamilies = [UInt32(family)] + (copyFamily.map { [$0] } ?? [])
        try withUnsafePointer(to: &priority) { priorityPointer in
            let queueInfos = queueFamilies.map { index in
                var queueInfo = VkDeviceQueueCreateInfo()
                queueInfo.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO
                queueInfo.queueFamilyIndex = index
                queueInfo.queueCount = 1
                queueInfo.pQueuePriorities = priorityPointer
                return queueInfo
            }
            try queueInfos.withUnsafeBufferPointer { queuePointer in
                var info = VkDeviceCreateInfo()
                info.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO
                info.queueCreateInfoCount = UInt32(queuePointer.count)
                info.pQueueCreateInfos = queuePointer.baseAddress
                let names: [StaticString] = importAlignment != nil ? ["VK_EXT_external_memory_host"] : []
                var pointers = names.map { Optional(UnsafeRawPointer($0.utf8Start).assumingMemoryBound(to: CChar.self)) }
                info.enabledExtensionCount = UInt32(pointers.count)
                try pointers.withUnsafeMutableBufferPointer { buffer in
                    info.ppEnabledExtensionNames = UnsafePointer(buffer.baseAddress)
                    try check(functions.vkCreateDevice(physicalDevice, &info, nil, &device), "vkCreateDevice")
                }
            }
        }
        if let missing = lf_vulkan_load_device(&functions, device) {
            throw BackendError.unavailable(name: "vulkan", reason: "the driver lacks \(String(cString: missing))")
        }
        self.functions = functions
        self.device = device!
        self.hostImportAlignment = functions.vkGetMemoryHostPointerPropertiesEXT != nil ? importAlignment : nil
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
        if let copyFamily {
            var copyQueue: VkQueue?
            functions.vkGetDeviceQueue(device, copyFamily, 0, &copyQueue)
            poolInfo.queueFamilyIndex = copyFamily
            var copyPool: VkCommandPool?
            try check(functions.vkCreateCommandPool(device, &poolInfo, nil, &copyPool), "vkCreateCommandPool(transfer)")
            transfer = VulkanTransferQueue(queue: copyQueue!, family: copyFamily, commandPool: copyPool!, dedicated: true)
        } else if transferQueue == .compute {
            transfer = VulkanTransferQueue(queue: queue!, family: queueFamily, commandPool: pool!, dedicated: false)
        } else {
            transfer = nil
        }

        let types = memoryTypes
        let wanted = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT.rawValue | VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT.rawValue
            | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT.rawValue
        unifiedMemory = !forceStaging && properties.deviceType != VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU
            && types.contains { $0.propertyFlags & wanted == wanted }
    }

    deinit {
        _ = functions.vkDeviceWaitIdle(device)
        pipelines.removeAll()
        if let transfer, transfer.dedicated { functions.vkDestroyCommandPool(device, transfer.commandPool, nil) }
        functions.vkDestroyCommandPool(device, commandPool, nil)
        functions.vkDestroyDevice(device, nil)
    }

    /// The names of the extensions `physicalDevice` offers.
    static func extensions(_ functions: LFVulkanFunctions, _ physicalDevice: VkPhysicalDevice) -> Set<String> {
        var count: UInt32 = 0
        _ = functions.vkEnumerateDeviceExtensionProperties(physicalDevice, nil, &count, nil)
        var extensions = [VkExtensionProperties](repeating: VkExtensionProperties(), count: Int(count))
        _ = functions.vkEnumerateDeviceExtensionProperties(physicalDevice, nil, &count, &extensions)
        return Set(extensions.prefix(Int(count)).map { properties in
            withUnsafeBytes(of: properties.extensionName) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        })
    }

    /// The device-local heaps' sizes and, where VK_EXT_memory_budget is offered, the bytes
    /// still available in them (budget less usage, for every process).
    func deviceLocalMemory() -> (total: Int, free: Int?) {
        let functions = self.functions
        let hasBudget = Self.extensions(functions, physicalDevice).contains("VK_EXT_memory_budget")
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
