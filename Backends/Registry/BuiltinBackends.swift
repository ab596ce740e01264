import LoRAFuse
import LoRAFuseCPU
import LoRAFuseVulkan

/// The plugins compiled into this build. A new backend target adds its plugin here;
/// models and commands find it through `BackendRegistry`.
public enum BuiltinBackends {
    public static let plugins: [any BackendPlugin] = [CPUBackendPlugin(), VulkanBackendPlugin()]

    /// Registers every built-in plugin (idempotent).
    public static func register(in registry: BackendRegistry = .shared) {
        for plugin in plugins { registry.register(plugin) }
    }
}
