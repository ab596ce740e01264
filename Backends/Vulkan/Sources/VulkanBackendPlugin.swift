import LoRAFuse

#if canImport(CVulkan)

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

    public func makeBackend(deviceIndex: Int, settings: BackendSettings) throws -> any Backend {
        var configuration = VulkanBackend.Configuration.fromEnvironment
        if let bytes = settings.maxDeviceMemory { configuration.maxDeviceMemory = bytes }
        return try VulkanBackend(deviceIndex: deviceIndex, configuration: configuration)
    }
}

#else

/// This build has no Vulkan backend: the Vulkan headers (Debian's libvulkan-dev) were not
/// installed when it was compiled, so the `CVulkan` module was unavailable and every other
/// file of this target compiled to nothing. The plugin stays registered so `--backend vulkan`
/// and `lorafuse backends` say why, instead of "unknown backend".
public struct VulkanBackendPlugin: BackendPlugin {
    public let name = "vulkan"
    public let summary = "GPU compute: GLSL kernels compiled to SPIR-V, one command buffer per graph"

    public static let missingHeadersReason =
        "this build of LoRAFuse has no Vulkan backend: the Vulkan headers (/usr/include/vulkan/vulkan.h, " +
        "Debian's libvulkan-dev) were missing when it was compiled; install them and rebuild the Vulkan target " +
        "(`touch Backends/Vulkan/CVulkan/loader.c Backends/Vulkan/Sources/*.swift` or `swift package clean`, then build again)"

    public init() {}

    public func availability() -> BackendAvailability {
        .unavailable(reason: Self.missingHeadersReason)
    }

    public func makeBackend(deviceIndex: Int) throws -> any Backend {
        throw BackendError.unavailable(name: name, reason: Self.missingHeadersReason)
    }
}

#endif
