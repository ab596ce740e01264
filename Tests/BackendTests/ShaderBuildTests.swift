import Foundation
import SPIRVReflection
import Testing
@testable import LoRAFuseVulkan

/// The kernel manifest (Shaders/kernels.json) and everything generated from it: the
/// committed SPIR-V, Shaders/generated/kernel_codes.glsl and Generated/VulkanKernel.swift.
@Suite struct ShaderBuildTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let spirvDirectory = root.appendingPathComponent("Backends/Vulkan/SPIRV")

    static func toolExists(_ name: String) -> Bool {
        (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/\(name)")
        }
    }

    /// glslang and spirv-tools are test packages: CI has them (so there the test always runs).
    static let compilersPresent = ProcessInfo.processInfo.environment["CI"] != nil
        || (toolExists("glslangValidator") && toolExists("spirv-val"))

    /// The generator built beside this test bundle (the test target depends on it).
    static let generator: URL = {
        var folder = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: folder.appendingPathComponent("vulkan-shaders-gen").path), folder.path != "/" {
            folder = folder.deletingLastPathComponent()
        }
        return folder.appendingPathComponent("vulkan-shaders-gen")
    }()

    @Test(.enabled(if: compilersPresent, "needs glslangValidator and spirv-val (glslang-tools, spirv-tools)"))
    func committedFilesAreWhatTheManifestGenerates() throws {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("lorafuse-kernels-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: output) }
        let process = Process()
        process.executableURL = Self.generator
        process.arguments = ["--root", Self.root.path, "--output", output.path]
        let pipe = Pipe()
        process.standardError = pipe
        try process.run()
        let messages = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "vulkan-shaders-gen failed (compile, spirv-val or interface): \(messages)")

        let fresh = try FileManager.default.contentsOfDirectory(atPath: output.appendingPathComponent("Backends/Vulkan/SPIRV").path).sorted()
        let stored = try FileManager.default.contentsOfDirectory(atPath: Self.spirvDirectory.path).filter { $0.hasSuffix(".spv") }.sorted()
        #expect(fresh == stored, "the committed .spv files are not the manifest's variants")
        let generated = fresh.map { "Backends/Vulkan/SPIRV/" + $0 }
            + ["Shaders/generated/kernel_codes.glsl", "Backends/Vulkan/Sources/Generated/VulkanKernel.swift"]
        for path in generated {
            let rebuilt = try Data(contentsOf: output.appendingPathComponent(path))
            let committed = try? Data(contentsOf: Self.root.appendingPathComponent(path))
            #expect(rebuilt == committed, "\(path) is stale: run Tools/shaders/compile-shaders.sh")
        }
    }

    /// Needs no compiler: every kernel case has its SPIR-V, no SPIR-V lacks a case, and each
    /// kernel's bindings, specialization constants and push-constant struct are what its
    /// shipped SPIR-V declares (offsets of the Swift struct included).
    @Test func everyKernelMatchesItsSPIRV() throws {
        let shipped = Set(try FileManager.default.contentsOfDirectory(atPath: Self.spirvDirectory.path).filter { $0.hasSuffix(".spv") })
        #expect(Set(VulkanKernel.allCases.map { $0.spirvName + ".spv" }) == shipped)
        #expect(Set(VulkanKernel.allCases).count == VulkanKernel.allCases.count)
        for kernel in VulkanKernel.allCases {
            let bytes = try [UInt8](Data(contentsOf: Self.spirvDirectory.appendingPathComponent(kernel.spirvName + ".spv")))
            let module = try SPIRVModule(bytes: bytes)
            #expect(module.bindings.count == kernel.bindingCount, "\(kernel)")
            #expect(Set(module.bindings.filter { $0.value == .uniformTexelBuffer }.keys) == kernel.texelBindings, "\(kernel)")
            #expect(module.specializationIDs == Array(0..<kernel.specializationCount), "\(kernel)")
            let members = module.pushConstants.map { VulkanPushMember(name: $0.name, offset: $0.offset, words: $0.count) }
            #expect(members == kernel.constants.spirvMembers, "\(kernel)")
            let constants = kernel.constants
            let laidOut = constants.layoutMatchesSPIRV, offsets = constants.swiftOffsets
            #expect(laidOut, "\(kernel): \(constants) offsets \(offsets)")
            #expect(module.pushConstantSize <= 128)
        }
    }

    /// The reflection reads what glslang wrote: a known kernel's facts, spelled out.
    @Test func reflectionReadsTheMatmulTexelInterface() throws {
        let bytes = try [UInt8](Data(contentsOf: Self.spirvDirectory.appendingPathComponent("matmul_texel_bf16.spv")))
        let module = try SPIRVModule(bytes: bytes)
        #expect(module.bindings == [0: .uniformTexelBuffer, 1: .uniformTexelBuffer, 2: .storageBuffer])
        #expect(module.localSize == [8, 8, 1])
        #expect(module.pushConstants.first?.name == "M")
        #expect(module.pushConstantSize == 19 * 4)
        let binary = try SPIRVModule(bytes: [UInt8](Data(contentsOf: Self.spirvDirectory.appendingPathComponent("binary.spv"))))
        #expect(binary.pushConstants.map(\.count) == [1, 1, 6, 6, 6])
        #expect(binary.pushConstants.map(\.offset) == [0, 4, 8, 32, 56])
        #expect(throws: SPIRVModule.ReflectionError.self) { try SPIRVModule(bytes: Array(bytes.prefix(64)) + [0, 0, 0xFF, 0xFF]) }
    }

    @Test func opCodesAreOneTable() throws {
        // The GLSL constants and the Swift enums come from the same manifest rows.
        let glsl = try String(contentsOf: Self.root.appendingPathComponent("Shaders/generated/kernel_codes.glsl"), encoding: .utf8)
        #expect(glsl.contains("const uint UNARY_SCALE = \(VulkanUnaryCode.scale.rawValue)u;"))
        #expect(glsl.contains("const uint DTYPE_F8E5M2 = \(VulkanDTypeCode.f8e5m2.rawValue)u;"))
        #expect(glsl.contains("const uint CONVERT_NARROW_BF16 = \(VulkanConvertCode.narrowBF16.rawValue)u;"))
        // No shader keeps a literal op number where a code exists.
        for source in ["unary.comp", "binary.comp", "rowwise.comp", "convert.comp", "topk_control.comp"] {
            let text = try String(contentsOf: Self.root.appendingPathComponent("Shaders/" + source), encoding: .utf8)
            #expect(!text.contains("case 0u:") && !text.contains("mode == 0u") && !text.contains("mode == 1u"), "\(source)")
        }
    }
}
