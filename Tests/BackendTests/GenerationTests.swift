import Foundation
import Testing
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// Whole generations against diffusers' FluxPipeline in float64 with imported noise
/// (Tools/reference/make_pipeline_fixtures.py): 4 steps, latents within 1e-3, the image
/// within 1/255 on at least 99.9 % of its values, on every backend.
@Suite(.serialized) struct GenerationTests {
    static let root = VAETests.root
    static let pipeline = VAETests.pipeline

    @Test(arguments: ["dev", "schnell", "dev-lora"])
    func generationMatchesFluxPipeline(_ name: String) throws {
        let expected = try SafeTensorsFile(path: Self.root.appendingPathComponent("generate-\(name).safetensors").path)
        let meta = expected.metadata
        let settings = try Self.settings(of: expected, pipeline: Self.pipeline)
        let model = try FluxModel.load(path: Self.pipeline.appendingPathComponent(meta["transformer"] ?? "").path)
        // dev-lora: a peft LoRA at weight 0.8 (set_adapters), applied hot at every step.
        let adapters = try meta["lora"].map { file in
            [LoRAAdapter(file: try LoRAFile.load(path: Self.root.appendingPathComponent(file).path, model: model),
                         scale: Float(meta["lora_scale"] ?? "") ?? 1)]
        } ?? []
        let reference = try expected.tensor(named: "image").doubles()
        for backend in BackendsUnderTest.all {
            var steps = 0
            let result = try FluxTextToImage(settings: settings, backend: backend).run(
                encoders: { try FluxTextEncoders.load(pipeline: Self.pipeline.path) }, model: model,
                transformers: { _ in ("base", [FluxTransformer(model: model, adapters: adapters)]) },
                vae: { try VAEDecoder.load(path: Self.pipeline.path) }, progress: { step, _, _ in steps = step })
            let label = "\(name) \(BackendsUnderTest.label(backend))"
            #expect(steps == settings.steps)
            let latentError = relativeError(actual: result.latents.floats(), expected: try expected.tensor(named: "latents_\(settings.steps - 1)").doubles())
            let decodedError = relativeError(actual: result.decoded.floats(), expected: try expected.tensor(named: "decoded").doubles())
            let close = zip(result.pixels, reference).filter { abs(Double($0) - $1) <= 1 }.count
            print("\(label): latents \(latentError), decoded \(decodedError), pixels within 1/255: \(close)/\(reference.count)")
            #expect(latentError <= 1e-3, "\(label) latents: \(latentError)")
            #expect(Double(close) >= 0.999 * Double(reference.count), "\(label) pixels: \(close)/\(reference.count)")
        }
    }

    /// A whole pipeline folder written by diffusers 0.42 + transformers 5.23 (sharded transformer
    /// and VAE, CLIP without `text_model.`, tokenizer.json only), prompt with emoji ZWJ sequences
    /// and CJK: 3 steps against the same pipeline in float64.
    @Test func transformers5PipelineGenerationMatches() throws {
        let pipeline = Self.root.appendingPathComponent("flux-tiny-transformers5")
        let expected = try SafeTensorsFile(path: pipeline.appendingPathComponent("generate-dev.safetensors").path)
        let settings = try Self.settings(of: expected, pipeline: pipeline)
        let model = try FluxModel.load(path: pipeline.appendingPathComponent("transformer").path)
        let reference = try expected.tensor(named: "image").doubles()
        for backend in BackendsUnderTest.all {
            let result = try FluxTextToImage(settings: settings, backend: backend).run(
                encoders: { try FluxTextEncoders.load(pipeline: pipeline.path) }, model: model,
                transformers: { _ in ("base", [FluxTransformer(model: model, adapters: [])]) },
                vae: { try VAEDecoder.load(path: pipeline.path) }, progress: { _, _, _ in })
            let label = "transformers5 \(BackendsUnderTest.label(backend))"
            let latentError = relativeError(actual: result.latents.floats(), expected: try expected.tensor(named: "latents_\(settings.steps - 1)").doubles())
            let close = zip(result.pixels, reference).filter { abs(Double($0) - $1) <= 1 }.count
            print("\(label): latents \(latentError), pixels within 1/255: \(close)/\(reference.count)")
            #expect(latentError <= 1e-3, "\(label) latents: \(latentError)")
            #expect(Double(close) >= 0.999 * Double(reference.count), "\(label) pixels: \(close)/\(reference.count)")
        }
    }

    /// The settings a generation fixture was made with (its metadata, noise and pipeline's scheduler).
    static func settings(of expected: SafeTensorsFile, pipeline: URL) throws -> FluxTextToImage.Settings {
        let meta = expected.metadata
        var settings = FluxTextToImage.Settings(prompt: meta["prompt"] ?? "", width: Int(meta["width"] ?? "") ?? 0,
                                                height: Int(meta["height"] ?? "") ?? 0, steps: Int(meta["steps"] ?? "") ?? 0)
        settings.guidance = Double(meta["guidance"] ?? "") ?? 0
        settings.maxSequenceLength = Int(meta["max_sequence_length"] ?? "") ?? 0
        settings.noise = try expected.tensor(named: "noise")
        settings.schedulerConfig = try FlowMatchSchedulerConfig(file: pipeline.appendingPathComponent("scheduler/scheduler_config.json"))
        return settings
    }

    @Test func schedulesMatchDiffusers() throws {
        // diffusers' FluxPipeline timesteps for 4 steps over 96 image tokens (mu from the
        // scheduler config), as FlowMatchEulerDiscreteScheduler computes them.
        let config = try FlowMatchSchedulerConfig(file: Self.pipeline.appendingPathComponent("scheduler/scheduler_config.json"))
        let schedule = FlowMatchSchedule(kind: .diffusers, steps: 4, imageSequenceLength: 96, config: config)
        #expect(schedule.sigmas.count == 5 && schedule.sigmas.last == 0)
        #expect(zip(schedule.sigmas, schedule.sigmas.dropFirst()).allSatisfy { $0 > $1 })
        let diffsynth = FlowMatchSchedule(kind: .diffsynth, steps: 2, imageSequenceLength: 96)
        // σ = [1, 0.003/1.002] → 3σ/(1 + 2σ).
        let low = 0.003 / 1.002
        #expect(diffsynth.sigmas == [1, Float(3 * low / (1 + 2 * low)), 0])
    }
}
