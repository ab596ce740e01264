import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion

/// Prompt to image with FLUX, as diffusers' `FluxPipeline.__call__` does it: encode the
/// prompt, sample packed latents with the flow-matching Euler sampler (embedded guidance
/// for guidance-distilled models), unpack, undo the VAE scaling, decode, and quantise to
/// 8-bit RGB. Components come from closures so each is loaded when needed and released
/// after (the text encoders before sampling).
public struct FluxTextToImage {
    /// What to generate: prompt, size, steps, guidance, schedule, seed or noise, limits.
    public struct Settings: Sendable {
        public var prompt: String
        public var width: Int
        public var height: Int
        public var steps: Int
        public var guidance: Double = 3.5
        public var maxSequenceLength = 512
        public var sampler: FlowMatchSchedule.Kind = .diffusers
        public var schedulerConfig = FlowMatchSchedulerConfig()
        public var seed: UInt64 = 0
        /// [1, C, H/s, W/s] unpacked initial noise (diffusers' layout); nil: from `seed`.
        public var noise: HostTensor?
        /// Decode in tiles of this many pixels (diffusers' `enable_tiling`); nil: whole.
        public var vaeTileSize: Int?
        public var limits = Limits()

        /// Settings with the defaults for everything else.
        public init(prompt: String, width: Int, height: Int, steps: Int) {
            self.prompt = prompt
            self.width = width
            self.height = height
            self.steps = steps
        }
    }

    /// Bounds on what one request may ask for, checked before anything is allocated: a
    /// mistyped size or step count is one clear error, not an allocation of terabytes.
    public struct Limits: Sendable, Equatable {
        /// width × height (default 2048 × 2048, twice what FLUX.1 was trained for per side).
        public var maxImagePixels = 2048 * 2048
        public var maxSteps = 1000
        /// Embedded guidance (FLUX.1-dev is distilled on about 1–10).
        public var guidanceRange: ClosedRange<Double> = 0...100
        public init() {}
    }

    /// Checks a request's numbers against `limits` (sizes with checked arithmetic).
    public static func check(width: Int, height: Int, steps: Int, guidance: Double, limits: Limits) throws(ModelError) {
        guard width > 0, height > 0 else { throw ModelError.invalidInputs("width and height must be positive, got \(width)×\(height)") }
        let (pixels, overflow) = width.multipliedReportingOverflow(by: height)
        guard !overflow, pixels <= limits.maxImagePixels else {
            throw ModelError.invalidInputs("\(width)×\(height) is more than the \(limits.maxImagePixels)-pixel limit (--max-image-pixels raises it)")
        }
        guard (1...limits.maxSteps).contains(steps) else {
            throw ModelError.invalidInputs("steps must be in 1...\(limits.maxSteps), got \(steps)")
        }
        guard guidance.isFinite, limits.guidanceRange.contains(guidance) else {
            throw ModelError.invalidInputs("guidance must be a finite number in \(limits.guidanceRange), got \(guidance)")
        }
    }

    /// What the caller hears while sampling: the step just finished, of how many, its seconds.
    /// An error it throws stops the run there (a server cancelling a job) and is rethrown.
    public typealias Progress = (_ step: Int, _ steps: Int, _ seconds: Double) throws -> Void

    /// A generation's latents, decoded image and pixels, with timings and the graphs built.
    public struct Result: Sendable {
        /// [1, C, h, w] latents after the last step (unpacked, before the VAE's scale and shift).
        public var latents: HostTensor
        /// [1, 3, H, W] the VAE's output, about [−1, 1].
        public var decoded: HostTensor
        /// H × W × 3 bytes.
        public var pixels: [UInt8]
        public var encodeSeconds = 0.0
        public var stepSeconds: [Double] = []
        public var decodeSeconds = 0.0
        public var conditioning: FluxTextEncoders.Conditioning?
        /// Transformer graphs built (one per distinct key of `transformers`).
        public var graphCount = 0
        /// The most bytes of transformer weights (base, LoRAs, constants) resident at once.
        public var residentWeightBytes = 0
        /// The transformer's device memory, per forward (the most of any step): peak device
        /// bytes (nil on the CPU backend), weight bytes uploaded, seconds waited for uploads.
        public var peakDeviceBytes: Int?
        public var uploadedWeightBytes = 0
        public var uploadWaitSeconds = 0.0
    }

    public let settings: Settings
    public let backend: any Backend

    /// A pipeline generating `settings` on `backend`.
    public init(settings: Settings, backend: any Backend) {
        self.settings = settings
        self.backend = backend
    }

    /// The latent grid for the image size, checked: sizes must be multiples of 2·(VAE upscale).
    public static func latentSize(width: Int, height: Int, vae: VAEConfig) throws -> (height: Int, width: Int) {
        let multiple = 2 * vae.upscale
        guard width > 0, height > 0, width % multiple == 0, height % multiple == 0 else {
            throw ModelError.invalidInputs("width and height must be positive multiples of \(multiple) for this VAE, got \(width)×\(height)")
        }
        return (height / vae.upscale, width / vae.upscale)
    }

    /// Runs the whole pipeline with `plan`'s passes at each step (progress = step / steps):
    /// one set of graphs per distinct layer selection (`Result.graphCount`).
    public func run(encoders: () throws -> FluxTextEncoders, model: FluxModel, plan: FusionPlan,
                    vae: () throws -> VAEDecoder, progress: Progress? = nil) throws -> Result {
        let steps = settings.steps
        return try run(encoders: encoders, model: model, transformers: { step in
            let chosen = plan.step(step, of: steps)
            return (chosen.key, chosen.passes)
        }, vae: vae, progress: progress)
    }

    /// Runs the whole pipeline. `transformers(step)` gives the forward passes for a step (one
    /// transformer, or several whose predictions are averaged) and a key: steps with equal
    /// keys reuse the same graphs.
    public func run<Key: Hashable>(encoders: () throws -> FluxTextEncoders, model: FluxModel,
                                   transformers: (Int) throws -> (key: Key, passes: [FluxTransformer]),
                                   vae loadVAE: () throws -> VAEDecoder, progress: Progress? = nil) throws -> Result {
        let config = model.config
        try Self.check(width: settings.width, height: settings.height, steps: settings.steps, guidance: settings.guidance, limits: settings.limits)
        let vae = try loadVAE()
        let (latentHeight, latentWidth) = try Self.latentSize(width: settings.width, height: settings.height, vae: vae.config)
        let channels = vae.config.latentChannels
        guard config.inChannels == 4 * channels, config.patchSize == 1 else {
            throw ModelError.invalidInputs("the transformer takes \(config.inChannels) channels per token; this VAE's \(channels) latent channels pack into \(4 * channels)")
        }
        let latentCount = channels * latentHeight * latentWidth
        var latents: [Float]
        if let noise = settings.noise {
            guard noise.shape.dimensions == [1, channels, latentHeight, latentWidth] else {
                throw ModelError.invalidInputs("noise must be [1, \(channels), \(latentHeight), \(latentWidth)] for \(settings.width)×\(settings.height), got \(noise.shape)")
            }
            if let index = noise.firstNonFiniteIndex() {
                throw ModelError.invalidInputs("the noise holds a non-finite value at flat index \(index)")
            }
            latents = noise.floats()
        } else {
            var generator = GaussianNoise(seed: settings.seed)
            latents = generator.sample(latentCount)
        }

        // 1. Text: encoders loaded and run once (their weights are copied in for that run
        // alone and dropped with their graphs).
        var start = DispatchTime.now().uptimeNanoseconds
        let conditioning = try encoders().encode(settings.prompt, maxSequenceLength: settings.maxSequenceLength, on: backend)
        var result = Result(latents: HostTensor(shape: [1], floats: [0]), decoded: HostTensor(shape: [1], floats: [0]), pixels: [])
        result.encodeSeconds = Self.seconds(since: start)
        result.conditioning = conditioning
        for (name, value) in [("encoder_hidden_states", conditioning.encoderHiddenStates), ("pooled_projections", conditioning.pooledProjections)]
        where !value.isAllFinite {
            throw NonFiniteOutput(stage: "the text encoders", origin: "their \(name) output (check the CLIP and T5 weights)")
        }
        guard conditioning.encoderHiddenStates.shape[2] == config.jointAttentionDim,
              conditioning.pooledProjections.shape[1] == config.pooledProjectionDim else {
            throw ModelError.invalidInputs("the text encoders give \(conditioning.encoderHiddenStates.shape[2])-wide states and \(conditioning.pooledProjections.shape[1])-wide pooled vectors; the transformer takes \(config.jointAttentionDim) and \(config.pooledProjectionDim)")
        }

        // 2. Sampling on packed latents.
        let tokens = (latentHeight / 2) * (latentWidth / 2)
        let schedule = FlowMatchSchedule(kind: settings.sampler, steps: settings.steps, imageSequenceLength: tokens,
                                         config: settings.schedulerConfig)
        var packed = LatentPacking.pack(latents, channels: channels, height: latentHeight, width: latentWidth)
        let imageIds = LatentPacking.imageIds(height: latentHeight, width: latentWidth)
        // The graphs of each key met so far and the weights they hold on the backend (the
        // base model's and the LoRA files' weights are shared between keys, so a new layer
        // selection uploads nothing new); all released when sampling ends.
        var built: [Key: (graphs: [Graph], weights: ResidentWeights)] = [:]
        defer { built.values.forEach { $0.weights.release() } }
        for step in 0..<settings.steps {
            start = DispatchTime.now().uptimeNanoseconds
            var tensors: [String: HostTensor] = [
                "hidden_states": HostTensor(shape: [1, tokens, 4 * channels], floats: packed),
                "encoder_hidden_states": conditioning.encoderHiddenStates,
                "pooled_projections": conditioning.pooledProjections,
                "timestep": HostTensor(shape: [1], dtype: .float64, values: [schedule.modelTimestep(step)]),
                "img_ids": imageIds, "txt_ids": conditioning.textIds,
            ]
            if config.guidanceEmbeds { tensors["guidance"] = HostTensor(shape: [1], dtype: .float64, values: [settings.guidance]) }
            let inputs = try FluxInputs(tensors, config: config)
            let (key, passes) = try transformers(step)
            if built[key] == nil {
                let graphs = try passes.map { try $0.graph(batch: 1, textLength: inputs.textLength, imageLength: tokens) }
                let weights = try backend.makeResident(weightsOf: graphs)
                built[key] = (graphs, weights)
                result.graphCount += 1
                result.residentWeightBytes = max(result.residentWeightBytes, weights.byteCount)
            }
            let graphs = built[key]!.graphs
            var velocity = [Float](repeating: 0, count: packed.count)
            for (pass, graph) in graphs.enumerated() {
                let execution = try backend.execute(graph, inputs: inputs.bindings)
                let output = execution.outputs[0]
                if let peak = execution.peakDeviceBytes { result.peakDeviceBytes = max(result.peakDeviceBytes ?? 0, peak) }
                result.uploadedWeightBytes = max(result.uploadedWeightBytes, execution.transientWeightBytes)
                result.uploadWaitSeconds = max(result.uploadWaitSeconds, execution.uploadWaitSeconds)
                let which = graphs.count > 1 ? " (pass \(pass + 1) of \(graphs.count))" : ""
                try NonFiniteDiagnosis.check([output], stage: "step \(step + 1) of \(settings.steps): the transformer\(which)",
                                             graph: graph, inputs: inputs.bindings, on: backend)
                let values = output.floats()
                for index in velocity.indices { velocity[index] += values[index] / Float(graphs.count) }
            }
            schedule.step(&packed, velocity: velocity, index: step)
            let seconds = Self.seconds(since: start)
            result.stepSeconds.append(seconds)
            try progress?(step + 1, settings.steps, seconds)
        }
        built.values.forEach { $0.weights.release() }  // the transformer is done
        built = [:]
        latents = LatentPacking.unpack(packed, channels: channels, height: latentHeight, width: latentWidth)
        result.latents = HostTensor(shape: [1, channels, latentHeight, latentWidth], floats: latents)

        // 3. Decode.
        start = DispatchTime.now().uptimeNanoseconds
        let decoded = try vae.decode(vae.config.unscaled(result.latents), tileSize: settings.vaeTileSize, on: backend)
        guard decoded.isAllFinite else {
            throw NonFiniteOutput(stage: "the VAE decoder", origin: "its output (the latents were finite; check the VAE weights)")
        }
        result.decoded = decoded
        result.pixels = Self.pixels(decoded)
        result.decodeSeconds = Self.seconds(since: start)
        return result
    }

    /// diffusers' postprocess: clamp(x/2 + 0.5, 0, 1)·255 rounded, as H × W × RGB bytes.
    public static func pixels(_ image: HostTensor) -> [UInt8] {
        let (channels, height, width) = (image.shape[1], image.shape[2], image.shape[3])
        let values = image.floats()
        var pixels = [UInt8](repeating: 0, count: height * width * 3)
        for y in 0..<height { for x in 0..<width { for c in 0..<min(3, channels) {
            let raw = Double(values[(c * height + y) * width + x])
            let value = raw.isNaN ? 0 : min(max(raw / 2 + 0.5, 0), 1)
            pixels[(y * width + x) * 3 + c] = UInt8((value * 255).rounded(.toNearestOrEven))
        } } }
        return pixels
    }

    static func seconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
}
