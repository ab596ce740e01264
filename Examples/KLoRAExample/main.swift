// Fusing a content LoRA and a style LoRA with K-LoRA through the library, the way an
// application would: load a FLUX pipeline, plan the fusion, generate, write a PNG.
// It runs on the bundled toy world (Examples/toyworld) in a few seconds on a CPU:
//   swift run klora-example [OUTPUT.png] [--backend vulkan]
import Foundation
import LoRAFuse
import LoRAFuseBackends
import LoRAFuseFusion
import LoRAFuseModels
import LoRAFusePipeline

var arguments = Array(CommandLine.arguments.dropFirst())
var backendName = "cpu"
if let index = arguments.firstIndex(of: "--backend"), index + 1 < arguments.count {
    backendName = arguments[index + 1]
    arguments.removeSubrange(index...(index + 1))
}
let output = arguments.first ?? "klora-example.png"
let world = URL(fileURLWithPath: "Examples/toyworld")
let pipeline = world.appendingPathComponent("pipeline")

do {
    // A backend from the registry; the scheduler runs on the CPU whatever the backend declines.
    BuiltinBackends.register()
    let backend = try BackendRegistry.shared.makeScheduledBackend(named: backendName)

    // The model parts, memory-mapped (nothing is read until a backend needs it).
    let model = try FluxModel.load(path: pipeline.appendingPathComponent("transformer").path)
    let encoders = try FluxTextEncoders.load(pipeline: pipeline.path)
    let vae = try VAEDecoder.load(path: pipeline.appendingPathComponent("vae").path)

    // A content LoRA (a new shape, "zorbo") and a style LoRA (a texture, "lumeq"), checked
    // against the model; K-LoRA is planned once here (its per-layer choices cached on disk).
    let content = LoRAAdapter(file: try LoRAFile.load(path: world.appendingPathComponent("loras/content-zorbo.safetensors").path, model: model))
    let style = LoRAAdapter(file: try LoRAFile.load(path: world.appendingPathComponent("loras/style-lumeq.safetensors").path, model: model))
    let plan = try FusionPlan.pair(model: model, fusion: LoRAFusion(method: .klora, content: content, style: style), on: backend)

    // Generation: one graph per distinct K-LoRA layer selection, built as steps need it.
    var settings = FluxTextToImage.Settings(prompt: "a zorbo in lumeq style", width: 32, height: 32, steps: 20)
    settings.maxSequenceLength = 24
    settings.seed = 7
    settings.schedulerConfig = try FlowMatchSchedulerConfig(file: pipeline.appendingPathComponent("scheduler/scheduler_config.json"))
    let result = try FluxTextToImage(settings: settings, backend: backend).run(
        encoders: { encoders }, model: model, plan: plan, vae: { vae },
        progress: { step, steps, _ in FileHandle.standardError.write(Data("\rstep \(step)/\(steps)".utf8)) })
    FileHandle.standardError.write(Data("\n".utf8))

    try PNGWriter.write(pixels: result.pixels, width: settings.width, height: settings.height,
                        text: [("prompt", settings.prompt)], to: output)
    print("\(output): \(settings.width)×\(settings.height), \(result.graphCount) graphs for \(settings.steps) steps on \(backend.name)")
} catch {
    FileHandle.standardError.write(Data("klora-example: \(error)\n".utf8))
    exit(1)
}
