// swift-tools-version: 6.0
import PackageDescription

// The CPU backend's hot loops are written with SIMD vectors; without a target CPU the
// Swift compiler lowers them to SSE2 and calls `fmaf` per lane. Haswell (AVX2 + FMA) is
// the oldest x86-64 level a FLUX workstation plausibly has, and on Zen 4 it reaches the
// same FMA throughput as AVX-512.
#if arch(x86_64)
let simdKernelSettings: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let simdKernelSettings: [SwiftSetting] = []
#endif

let package = Package(
    name: "LoRAFuse",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "LoRAFuse", targets: ["LoRAFuse", "LoRAFuseBackends"]),
        .executable(name: "lorafuse", targets: ["lorafuse"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
    ],
    targets: [
        // The system zlib, for PNG output.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        // Deleting temporary files when a signal stops the process (async-signal-safe, in C).
        .target(name: "CSignalCleanup", path: "Sources/CSignalCleanup"),
        // The engine: tensors, graph, backend protocol and registry, safetensors I/O.
        .target(
            name: "LoRAFuse",
            dependencies: ["CZlib", "CSignalCleanup", .product(name: "GRDB", package: "GRDB.swift")],
            path: "Sources/LoRAFuse",
            swiftSettings: simdKernelSettings
        ),
        // Backends: one target each; each exposes a `BackendPlugin`.
        // ISA-specific micro-kernels (AVX-512), chosen at run time by the CPU backend.
        .target(
            name: "LoRAFuseCPUKernels",
            path: "Backends/CPUKernels",
            cSettings: [.unsafeFlags(["-O3"])]
        ),
        .target(
            name: "LoRAFuseCPU",
            dependencies: ["LoRAFuse", "LoRAFuseCPUKernels"],
            path: "Backends/CPU",
            swiftSettings: simdKernelSettings
        ),
        // Vulkan headers without prototypes and a dlopen loader (no link-time libvulkan).
        .target(
            name: "CVulkan",
            path: "Backends/Vulkan/CVulkan",
            linkerSettings: [.linkedLibrary("dl")]
        ),
        // Reads a compute shader's interface from its SPIR-V (push constants, bindings).
        .target(name: "SPIRVReflection", path: "Tools/shaders/SPIRVReflection"),
        // Compiles Shaders/kernels.json and generates the Swift kernel enum and the GLSL op codes
        // (run by Tools/shaders/compile-shaders.sh).
        .executableTarget(name: "vulkan-shaders-gen", dependencies: ["SPIRVReflection"], path: "Tools/shaders/vulkan-shaders-gen"),
        .target(
            name: "LoRAFuseVulkan",
            dependencies: ["LoRAFuse", "CVulkan"],
            path: "Backends/Vulkan",
            exclude: ["CVulkan"],
            sources: ["Sources"],
            resources: [.copy("SPIRV")]
        ),
        // The list of built-in plugins, registered by the CLI and the tests.
        .target(
            name: "LoRAFuseBackends",
            dependencies: ["LoRAFuse", "LoRAFuseCPU", "LoRAFuseVulkan"],
            path: "Backends/Registry"
        ),
        .executableTarget(
            name: "lorafuse",
            dependencies: [
                "LoRAFuse", "LoRAFuseBackends",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tools/lorafuse"
        ),
        .testTarget(
            name: "LoRAFuseTests",
            dependencies: ["LoRAFuse"],
            path: "Tests/LoRAFuseTests"
        ),
        .testTarget(
            name: "BackendTests",
            dependencies: ["LoRAFuse", "LoRAFuseBackends", "LoRAFuseCPU", "LoRAFuseVulkan", "SPIRVReflection", "vulkan-shaders-gen"],
            path: "Tests/BackendTests"
        ),
        // Runs the built `lorafuse` executable as a user would.
        .testTarget(
            name: "CLITests",
            dependencies: ["lorafuse", "LoRAFuse", "LoRAFuseBackends"],
            path: "Tests/CLITests"
        ),
    ]
)
