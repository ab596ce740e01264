import Foundation
import LoRAFuse
import LoRAFuseBackends
import LoRAFuseCPU

/// Every backend the parity tests run on: each registered plugin that is available here,
/// plus the CPU backend with its built-in kernels only (BLAS off), so both matmul paths
/// are checked. A new backend plugin inherits every test by being registered.
enum BackendsUnderTest {
    static let all: [any Backend] = {
        BuiltinBackends.register()
        var backends: [any Backend] = []
        for plugin in BackendRegistry.shared.all {
            for device in plugin.availability().devices {
                if let backend = try? plugin.makeBackend(deviceIndex: device.index) { backends.append(backend) }
            }
        }
        let builtIn = CPUBackend(configuration: .init(useBLAS: false))
        if backends.contains(where: { ($0 as? CPUBackend)?.usesBLAS == true }) { backends.append(builtIn) }
        return backends
    }()

    static func label(_ backend: any Backend) -> String {
        if let cpu = backend as? CPUBackend { return cpu.usesBLAS ? "cpu+blas" : "cpu" }
        return "\(backend.name):\(backend.device.index)"
    }
}
