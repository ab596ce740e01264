import Foundation
import Testing

/// The committed SPIR-V must be exactly what Shaders/ compiles to, and valid.
@Suite struct ShaderBuildTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func toolExists(_ name: String) -> Bool {
        (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/\(name)")
        }
    }

    @Test func committedSPIRVMatchesTheSources() throws {
        guard Self.toolExists("glslangValidator"), Self.toolExists("spirv-val") else {
            // CI installs glslang-tools and spirv-tools, so there this is a failure, not a skip.
            if ProcessInfo.processInfo.environment["CI"] != nil { Issue.record("glslangValidator/spirv-val missing in CI") }
            return
        }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("lorafuse-spirv-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: output) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [Self.root.appendingPathComponent("Tools/shaders/compile-shaders.sh").path, output.path]
        let pipe = Pipe()
        process.standardError = pipe
        try process.run()
        process.waitUntilExit()
        let messages = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "compile-shaders.sh failed (compile or spirv-val): \(messages)")

        let committed = Self.root.appendingPathComponent("Backends/Vulkan/SPIRV")
        let fresh = try FileManager.default.contentsOfDirectory(atPath: output.path).sorted()
        let stored = try FileManager.default.contentsOfDirectory(atPath: committed.path).filter { $0.hasSuffix(".spv") }.sorted()
        #expect(fresh == stored, "the committed .spv files differ in number from the shader variants")
        for name in fresh {
            let rebuilt = try Data(contentsOf: output.appendingPathComponent(name))
            let shipped = try Data(contentsOf: committed.appendingPathComponent(name))
            #expect(rebuilt == shipped, "\(name) is stale: run Tools/shaders/compile-shaders.sh")
        }
    }
}
