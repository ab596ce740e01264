import Foundation
import LoRAFusePipeline
import Testing

/// Examples/KLoRAExample, the library used as an application uses it, draws exactly what
/// `lorafuse generate` draws with the same settings.
@Suite struct ExampleTests {
    @Test func kloraExampleMatchesGenerate() throws {
        let scratch = ScratchFolder("lorafuse-example")
        let example = CommandLine.executable.deletingLastPathComponent().appendingPathComponent("klora-example")
        let process = Process()
        process.executableURL = example
        process.arguments = [scratch.url.appendingPathComponent("example.png").path]
        process.currentDirectoryURL = CommandLine.repository
        let error = Pipe()
        process.standardError = error
        process.standardOutput = Pipe()
        try process.run()
        let messages = String(decoding: error.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "klora-example failed: \(messages)")

        let world = CommandLine.repository.appendingPathComponent("Examples/toyworld").path
        let generated = try CommandLine.run(["generate", "--model", world + "/pipeline", "--prompt", "a zorbo in lumeq style", "--width", "32",
                                     "--height", "32", "--steps", "20", "--seed", "7", "--max-sequence-length", "24", "--fusion", "klora",
                                     "--content", world + "/loras/content-zorbo.safetensors", "--style", world + "/loras/style-lumeq.safetensors",
                                     "--output", scratch.url.appendingPathComponent("generate.png").path])
        try #require(generated.status == 0, "\(generated.error)")
        let fromExample = try PNGWriter.decode(Data(contentsOf: scratch.url.appendingPathComponent("example.png")))
        let fromGenerate = try PNGWriter.decode(Data(contentsOf: scratch.url.appendingPathComponent("generate.png")))
        #expect(fromExample.width == 32 && fromExample.height == 32)
        let differing = zip(fromExample.pixels, fromGenerate.pixels).filter { $0 != $1 }.count
        #expect(fromExample.pixels.count == fromGenerate.pixels.count && differing == 0, "\(differing) bytes differ")
        #expect(Set(fromExample.pixels).count > 8, "the image is not flat")
    }
}
