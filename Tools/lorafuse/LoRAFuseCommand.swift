import ArgumentParser
import LoRAFuse
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseToyWorld
import LoRAFuseBackends

@main
struct LoRAFuseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lorafuse",
        abstract: "Run FLUX-style diffusion transformers with several LoRAs fused, on CPU or Vulkan.",
        version: "0.1.0",
        subcommands: [BackendsCommand.self, InspectCommand.self, ProfileCommand.self, ParityOpsCommand.self, EncodeCommand.self, TokenizeCommand.self, GenerateCommand.self, ServeCommand.self, WorkerCommand.self, PoolCommand.self, DitCommand.self, ParityCommand.self, LoRACommand.self, KLoRACommand.self, ESTLoRACommand.self, DemoCommand.self, EvalCommand.self, SelfTestCommand.self]
    )

    static func main() {
        AtomicFile.installSignalCleanup()
        BuiltinBackends.register()
        TuningEnvironment.warnAboutUnknownNames()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}
