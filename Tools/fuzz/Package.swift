// swift-tools-version: 6.0
// libFuzzer targets for LoRAFuse's parsers of untrusted files. Build and run them with
// Tools/fuzz/run.sh (see docs/fuzzing.md); each target is an executable whose
// LLVMFuzzerTestOneInput feeds one input to one parser.
import PackageDescription

let targets = ["FuzzSafeTensorsHeader", "FuzzGGUFHeader", "FuzzFluxConfig", "FuzzTokenizerJSON", "FuzzCLIPVocabMerges", "FuzzSentencePiece",
               "FuzzLoRAKeys"]

let package = Package(
    name: "LoRAFuseFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "LoRAFuse", path: "../..")],
    targets: [
        .target(name: "FuzzSupport", dependencies: [.product(name: "LoRAFuse", package: "LoRAFuse")], path: "Sources/FuzzSupport"),
    ] + targets.map { name in
        .executableTarget(name: name, dependencies: ["FuzzSupport", .product(name: "LoRAFuse", package: "LoRAFuse")],
                          path: "Sources/\(name)")
    }
)
