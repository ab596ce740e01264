import Foundation
import LoRAFuse

/// Registers the CPU backend: always available, one device (this machine's cores).
public struct CPUBackendPlugin: BackendPlugin {
    public let name = "cpu"
    public let summary = "reference backend: float32 kernels on the host CPU (Swift SIMD + Dispatch, optional OpenBLAS)"

    public init() {}

    public func availability() -> BackendAvailability {
        .available([Self.deviceInfo(configuration: .fromEnvironment)])
    }

    public func makeBackend(deviceIndex: Int) throws -> any Backend {
        guard deviceIndex == 0 else { throw BackendError.noSuchDevice(backend: name, index: deviceIndex, count: 1) }
        return CPUBackend(configuration: .fromEnvironment)
    }

    static func deviceInfo(configuration: CPUBackend.Configuration) -> DeviceInfo {
        var details = ["threads": String(configuration.threadCount)]
        details["gemm kernel"] = configuration.useAVX512 && GemmKernel.hasAVX512 ? "avx512 14x32" : "avx2 6x16"

        details["memory"] = "\(ProcessInfo.processInfo.physicalMemory / (1 << 20)) MiB"
        if !configuration.useBLAS {
            details["blas"] = "off (LORAFUSE_CPU_BLAS=0)"
        } else if let blas = OpenBLAS.shared {
            details["blas"] = blas.libraryName
        } else {
            details["blas"] = "none: \(OpenBLAS.loadFailure ?? "not found"); using built-in kernels"
        }
        return DeviceInfo(index: 0, name: modelName ?? "host CPU", kind: "cpu", details: details)
    }

    /// Read once per process (every backend made asks for its device).
    static let modelName = cpuModelName()

    static func cpuModelName() -> String? {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("model name") {
            return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) }
        }
        return nil
    }
}
