import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline

/// `lorafuse self-test …`: hooks the tests use to exercise what cannot be reached from a
/// normal run (hidden from the help).
struct SelfTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "self-test", abstract: "Hooks for LoRAFuse's own tests.", shouldDisplay: false,
        subcommands: [HoldWrite.self])

    /// Stages files in an atomic-write transaction, says so on stdout, then waits for a
    /// signal (at most --seconds): the test stops it and checks that nothing is left.
    struct HoldWrite: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "hold-write")

        @Argument var paths: [String]
        @Option(parsing: .unconditional) var seconds = 30

        func run() throws {
            let files = AtomicFile.Transaction()
            for path in paths {
                if let failure = files.stage(path, fill: { $0.write(Array("partial".utf8)) }) { throw ValidationError(failure) }
            }
            FileHandle.standardOutput.write(Data("staged \(paths.count)\n".utf8))
            sleep(UInt32(max(0, seconds)))
            if let failure = files.commit() { throw ValidationError(failure) }
        }
    }
}
