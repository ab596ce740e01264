// Built only where the Vulkan headers are installed; see VulkanBackendPlugin.swift.
#if canImport(CVulkan)
import CVulkan
import Foundation
import LoRAFuse

/// A failed Vulkan call, with the call and the result code.
struct VulkanError: Error, CustomStringConvertible {
    let call: String
    let result: VkResult
    var description: String { "\(call) failed: \(Self.name(of: result))" }

    static func name(of result: VkResult) -> String {
        switch result {
        case VK_ERROR_OUT_OF_HOST_MEMORY: "out of host memory"
        case VK_ERROR_OUT_OF_DEVICE_MEMORY: "out of device memory"
        case VK_ERROR_INITIALIZATION_FAILED: "initialization failed"
        case VK_ERROR_DEVICE_LOST: "device lost"
        case VK_ERROR_INCOMPATIBLE_DRIVER: "incompatible driver (no Vulkan driver installed?)"
        case VK_ERROR_EXTENSION_NOT_PRESENT: "extension not present"
        case VK_ERROR_FEATURE_NOT_PRESENT: "feature not present"
        case VK_ERROR_TOO_MANY_OBJECTS: "too many objects"
        case VK_TIMEOUT: "timeout"
        default: "VkResult \(result.rawValue)"
        }
    }
}

@inline(__always)
func check(_ result: VkResult, _ call: @autoclosure () -> String) throws(VulkanError) {
    guard result == VK_SUCCESS else { throw VulkanError(call: call(), result: result) }
}

/// The Vulkan loader and one instance for the whole process, created on first use.
/// Probing never crashes: a missing loader or driver becomes `failure`.
final class VulkanInstance: @unchecked Sendable {
    static let shared = VulkanInstance()

    private(set) var functions = LFVulkanFunctions()
    private(set) var instance: VkInstance?
    private(set) var physicalDevices: [VkPhysicalDevice] = []
    private(set) var failure: String?

    private init() {
        var errorText = [CChar](repeating: 0, count: 512)
        guard lf_vulkan_open(&functions, &errorText, UInt(errorText.count)) == 0 else {
            failure = String(decoding: errorText.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return
        }
        var version: UInt32 = (1 << 22)
        if let enumerate = functions.vkEnumerateInstanceVersion { _ = enumerate(&version) }
        guard version >= (1 << 22) | (1 << 12) else {
            failure = "the Vulkan loader supports only Vulkan 1.0; 1.1 is required"
            return
        }
        let created: VkInstance? = "LoRAFuse".withCString { name in
            var application = VkApplicationInfo()
            application.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO
            application.pApplicationName = name
            application.pEngineName = name
            application.apiVersion = (1 << 22) | (1 << 12)
            return withUnsafePointer(to: &application) { applicationPointer in
                var info = VkInstanceCreateInfo()
                info.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO
                info.pApplicationInfo = applicationPointer
                var instance: VkInstance?
                let result = functions.vkCreateInstance(&info, nil, &instance)
                if result != VK_SUCCESS {
                    failure = "vkCreateInstance failed: \(VulkanError.name(of: result))"
                    return nil
                }
                return instance
            }
        }
        guard let created else { return }
        instance = created
        if let missing = lf_vulkan_load_instance(&functions, created) {
            failure = "the Vulkan loader lacks \(String(cString: missing))"
            return
        }
        var count: UInt32 = 0
        _ = functions.vkEnumeratePhysicalDevices(created, &count, nil)
        var devices = [VkPhysicalDevice?](repeating: nil, count: Int(count))
        _ = functions.vkEnumeratePhysicalDevices(created, &count, &devices)
        // Discrete GPUs first, then integrated, virtual, and CPU devices (lavapipe) last.
        func rank(_ device: VkPhysicalDevice) -> Int {
            var properties = VkPhysicalDeviceProperties()
            functions.vkGetPhysicalDeviceProperties(device, &properties)
            switch properties.deviceType {
            case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0
            case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1
            case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2
            case VK_PHYSICAL_DEVICE_TYPE_CPU: return 4
            default: return 3
            }
        }
        let found = devices.prefix(Int(count)).compactMap { $0 }
        physicalDevices = found.enumerated().sorted { (rank($0.element), $0.offset) < (rank($1.element), $1.offset) }.map(\.element)
        if physicalDevices.isEmpty { failure = "the Vulkan loader found no device (is a driver such as mesa-vulkan-drivers installed?)" }
    }

    /// Name, kind, driver and limits of a physical device.
    func describe(_ device: VkPhysicalDevice, index: Int) -> DeviceInfo {
        var properties = VkPhysicalDeviceProperties()
        functions.vkGetPhysicalDeviceProperties(device, &properties)
        let name = withUnsafeBytes(of: properties.deviceName) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let kind: String = switch properties.deviceType {
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: "discrete-gpu"
        case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: "integrated-gpu"
        case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: "virtual-gpu"
        case VK_PHYSICAL_DEVICE_TYPE_CPU: "cpu"
        default: "other"
        }
        var memory = VkPhysicalDeviceMemoryProperties()
        functions.vkGetPhysicalDeviceMemoryProperties(device, &memory)
        let heaps = withUnsafeBytes(of: memory.memoryHeaps) { raw in
            (0..<Int(memory.memoryHeapCount)).map { raw.load(fromByteOffset: $0 * MemoryLayout<VkMemoryHeap>.stride, as: VkMemoryHeap.self) }
        }
        let limits = properties.limits
        let api = properties.apiVersion
        return DeviceInfo(index: index, name: name, kind: kind, details: [
            "api": "\(api >> 22).\((api >> 12) & 0x3FF).\(api & 0xFFF)",
            "driver": String(format: "0x%08x", properties.driverVersion),
            "vendor": String(format: "0x%04x", properties.vendorID),
            "memory": heaps.map { "\($0.size >> 20) MiB" }.joined(separator: " + "),
            "maxStorageBufferRange": "\(limits.maxStorageBufferRange)",
            "minStorageBufferOffsetAlignment": "\(limits.minStorageBufferOffsetAlignment)",
            "maxComputeSharedMemorySize": "\(limits.maxComputeSharedMemorySize)",
            "maxComputeWorkGroupInvocations": "\(limits.maxComputeWorkGroupInvocations)",
            "timestampPeriod": "\(limits.timestampPeriod) ns",
        ])
    }

    var devices: [DeviceInfo] { physicalDevices.enumerated().map { describe($0.element, index: $0.offset) } }
}

#endif
