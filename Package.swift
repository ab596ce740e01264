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
        .library(name: "LoRAFuse", targets: ["LoRAFuse", "LoRAFuseModels", "LoRAFuseFusion", "LoRAFuseRetrieval", "LoRAFusePipeline",
                                             "LoRAFuseVerification", "LoRAFuseBackends", "LoRAFuseServe"]),
        .executable(name: "lorafuse", targets: ["lorafuse"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        // `swift package generate-documentation`: the DocC catalogs in Sources/*/Documentation.docc.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
        // `lorafuse serve`: the HTTP server, its OpenAPI-generated stubs, and its metrics.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-openapi-generator", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-openapi-runtime", from: "1.0.0"),
        .package(url: "https://github.com/hummingbird-project/swift-openapi-hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
    ],
    targets: [
        // The system zlib, for PNG output.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        // Deleting temporary files when a signal stops the process (async-signal-safe, in C).
        .target(name: "CSignalCleanup", path: "Sources/CSignalCleanup"),
        // The library in parts, each a module (the way mlx-swift splits MLX, MLXNN, MLXFast);
        // docs/architecture.md draws the graph.
        // The core: tensors, graph, backend protocol, scheduler and registry, safetensors I/O.
        .target(
            name: "LoRAFuse",
            dependencies: ["CSignalCleanup"],
            path: "Sources/LoRAFuse",
            swiftSettings: simdKernelSettings
        ),
        // Models as graphs: the FLUX transformer, CLIP and T5 text encoders, the VAE decoder.
        .target(name: "LoRAFuseModels", dependencies: ["LoRAFuse"], path: "Sources/LoRAFuseModels"),
        // LoRA files, merging, and the fusion methods (K-LoRA, AutoLoRA, the baselines, FusionPlan).
        .target(name: "LoRAFuseFusion", dependencies: ["LoRAFuse", "LoRAFuseModels"], path: "Sources/LoRAFuseFusion"),
        // The LoRA pool and AutoLoRA's retrieval (the only part that links GRDB and SQLite).
        .target(
            name: "LoRAFuseRetrieval",
            dependencies: ["LoRAFuse", "LoRAFuseModels", "LoRAFuseFusion", .product(name: "GRDB", package: "GRDB.swift")],
            path: "Sources/LoRAFuseRetrieval"
        ),
        // Text to image: the flow-matching sampler, the pipeline, PNG output (zlib).
        .target(name: "LoRAFusePipeline", dependencies: ["LoRAFuse", "LoRAFuseModels", "LoRAFuseFusion", "CZlib"],
                path: "Sources/LoRAFusePipeline"),
        // `lorafuse serve`: generation over HTTP (Sources/LoRAFuseServe/openapi.yaml, stubs generated
        // at build time), a job queue in SQLite, the models loaded once, Prometheus metrics.
        .target(
            name: "LoRAFuseServe",
            dependencies: [
                "LoRAFuse", "LoRAFuseModels", "LoRAFuseFusion", "LoRAFuseRetrieval", "LoRAFusePipeline",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "OpenAPIRuntime", package: "swift-openapi-runtime"),
                .product(name: "OpenAPIHummingbird", package: "swift-openapi-hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/LoRAFuseServe",
            plugins: [.plugin(name: "OpenAPIGenerator", package: "swift-openapi-generator")]
        ),
        // Verification: the float64 reference evaluator and the op parity cases.
        .target(name: "LoRAFuseVerification", dependencies: ["LoRAFuse"], path: "Sources/LoRAFuseVerification"),
        // The toy world (a tiny FLUX-shaped model, its LoRAs and classifiers) the demo and the
        // fusion evaluation run on.
        .target(name: "LoRAFuseToyWorld", dependencies: ["LoRAFuse", "LoRAFuseModels", "LoRAFusePipeline"], path: "Examples/LoRAFuseToyWorld"),
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
                "LoRAFuse", "LoRAFuseModels", "LoRAFuseFusion", "LoRAFuseRetrieval", "LoRAFusePipeline",
                "LoRAFuseVerification", "LoRAFuseToyWorld", "LoRAFuseBackends", "LoRAFuseServe",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tools/lorafuse"
        ),
        // The library used as an application would use it (README, "Using the library").
        .executableTarget(
            name: "klora-example",
            dependencies: ["LoRAFuse", "LoRAFuseModels", "LoRAFuseFusion", "LoRAFusePipeline", "LoRAFuseBackends"],
            path: "Examples/KLoRAExample"
        ),
        .testTarget(
            name: "LoRAFuseTests",
            dependencies: ["LoRAFuse", "LoRAFuseModels", "LoRAFuseFusion", "LoRAFuseRetrieval", "LoRAFusePipeline", "LoRAFuseVerification", "LoRAFuseToyWorld"],
            path: "Tests/LoRAFuseTests"
        ),
        .testTarget(
            name: "BackendTests",
            dependencies: ["LoRAFuse", "LoRAFuseModels", "LoRAFuseFusion", "LoRAFuseRetrieval", "LoRAFusePipeline", "LoRAFuseVerification", "LoRAFuseToyWorld",
                           "LoRAFuseBackends", "LoRAFuseCPU", "LoRAFuseVulkan", "SPIRVReflection", "vulkan-shaders-gen"],
            path: "Tests/BackendTests"
        ),
        // Runs the built `lorafuse` executable as a user would.
        .testTarget(
            name: "CLITests",
            dependencies: ["lorafuse", "klora-example", "LoRAFuse", "LoRAFuseModels", "LoRAFuseFusion", "LoRAFuseRetrieval", "LoRAFusePipeline", "LoRAFuseVerification", "LoRAFuseToyWorld", "LoRAFuseBackends",
                           "LoRAFuseServe"],
            path: "Tests/CLITests"
        ),
    ]
)
