// swift-tools-version: 6.0
// Builds Apple's swift-openapi-generator command for Tools/serve/generate-openapi.sh, which
// turns Sources/LoRAFuseServe/openapi.yaml into the committed Sources/LoRAFuseServe/Generated/.
// A package of its own, so the main build (and the fuzz build, whose sanitizer runtime
// brings its own `main`) never compiles the generator.
import PackageDescription

let package = Package(
    name: "LoRAFuseOpenAPIGenerator",
    dependencies: [.package(url: "https://github.com/apple/swift-openapi-generator", exact: "1.14.3")],
    targets: []
)
