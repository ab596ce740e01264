import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld
import LoRAFuseBackends
import LoRAFuseCPU
import LoRAFuseVulkan

/// Every backend the parity tests run on: each registered plugin that is available here,
/// plus the variants a device would otherwise hide — the CPU backend with its built-in
/// kernels (BLAS off) and the Vulkan backend with the matmul kernel its device does not
/// pick by default (so lavapipe also checks the shared-memory GPU kernel). A new backend
/// plugin inherits every test by being registered. The CPU variants cover both built-in
/// GEMM kernels (AVX-512 where the CPU has it, and AVX2). The extra Vulkan variant also moves
/// data through staging buffers, the discrete-GPU path, so lavapipe exercises it too.
enum BackendsUnderTest {
    static let all: [any Backend] = {
        BuiltinBackends.register()
        var backends: [any Backend] = []
        for plugin in BackendRegistry.shared.all {
            for device in plugin.availability().devices {
                if let backend = try? plugin.makeBackend(deviceIndex: device.index) { backends.append(backend) }
            }
        }
        // The built-in kernels without the memory pool (every activation mapped fresh).
        backends.append(CPUBackend(configuration: .init(useBLAS: false, reuseMemory: false)))
        // The AVX2 kernel too, where the preferred one is AVX-512.
        let avx2 = CPUBackend(configuration: .init(useBLAS: false, useAVX512: false))
        if !backends.contains(where: { ($0 as? CPUBackend)?.kernelName == "avx2" }) { backends.append(avx2) }
        #if canImport(CVulkan)
        for case let vulkan as VulkanBackend in backends {
            let other: VulkanBackend.MatmulVariant = vulkan.effectiveMatmulVariant == .tiled ? .texel : .tiled
            if let variant = try? VulkanBackend(deviceIndex: vulkan.device.index, matmulVariant: other, forceStaging: vulkan.usesUnifiedMemory) {
                backends.append(variant)
            }
        }
        #endif
        return backends
    }()

    /// Whether the Vulkan-only tests run: where a Vulkan device is found, and always in CI
    /// (where a missing device must fail them, not skip them). Elsewhere they are skipped,
    /// and reported as skipped.
    static let vulkanTestsEnabled: Bool = ProcessInfo.processInfo.environment["CI"] != nil || all.contains { $0.name == "vulkan" }

    static func label(_ backend: any Backend) -> String {
        if let cpu = backend as? CPUBackend {
            return (cpu.usesBLAS ? "cpu+blas" : "cpu(\(cpu.kernelName))") + (cpu.configuration.reuseMemory ? "" : ", unpooled")
        }
        #if canImport(CVulkan)
        if let vulkan = backend as? VulkanBackend {
            return "vulkan:\(vulkan.device.index)(\(vulkan.effectiveMatmulVariant.rawValue)\(vulkan.usesUnifiedMemory ? "" : ", staging"))"
        }
        #endif
        return "\(backend.name):\(backend.device.index)"
    }
}
