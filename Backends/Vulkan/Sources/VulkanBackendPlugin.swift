import LoRAFuse

/// Registers the Vulkan backend. Availability comes from loading libvulkan.so.1 at run
/// time and enumerating devices; without a loader or driver it says why, never crashes.
public struct VulkanBackendPlugin: BackendPlugin {
    public let name = "vulkan"
    public let summary = "GPU compute: GLSL kernels compiled to SPIR-V, one command buffer per graph"

    public init() {}

    public func availability() -> BackendAvailability {
        let instance = VulkanInstance.shared
        if let failure = instance.failure { return .unavailable(reason: failure) }
        return .available(instance.devices)
    }

    public func makeBackend(deviceIndex: Int) throws -> any Backend {
        try VulkanBackend(deviceIndex: deviceIndex)
    }
}
