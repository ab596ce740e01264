import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// `lorafuse generate`: prompt (+ LoRAs) to PNG with a FLUX pipeline (docs/contracts.md).
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate an image from a prompt with FLUX, LoRAs fused as asked; writes a PNG.",
        discussion: """
        --model: a diffusers FLUX pipeline folder (transformer/, vae/, text_encoder/, tokenizer/, text_encoder_2/,
        tokenizer_2/, scheduler/), or a ComfyUI all-in-one checkpoint file (transformer under model.diffusion_model.,
        CLIP-L under text_encoders.clip_l.transformer., T5 under text_encoders.t5xxl.transformer., VAE under vae.),
        which holds no tokenizers: give --clip-tokenizer and --t5-tokenizer with it. Or the parts as ComfyUI users
        keep them: --transformer (flux1-dev.safetensors or a folder), --vae (ae.safetensors or a folder),
        --clip/--clip-tokenizer, --t5/--t5-tokenizer; any part given explicitly replaces the pipeline's.
        --config: a single-file transformer's config (diffusers' transformer/config.json), for what shapes do not show.
        Noise comes from --seed (LoRAFuse's own generator: xoshiro256** + Box–Muller) or --noise FILE (`noise`
        [1, C, H/8, W/8] unpacked, e.g. torch's, for exact comparisons with diffusers).
        --sampler diffusers: FluxPipeline's resolution-dependent shift; diffsynth: DiffSynth-Studio's fixed shift 3.
        LoRAs: --lora FILE[:SCALE] hot (or --merge), or --fusion METHOD with --content/--style (K-LoRA's progress is
        step/steps) or --fusion autolora --fusion-weights FILE with --lora files.
        """
    )

    @Option(name: .long, help: "A diffusers FLUX pipeline folder, or a ComfyUI all-in-one checkpoint file.")
    var model: String?

    @Option(name: .long, help: "Transformer: a BFL checkpoint or diffusers folder (overrides the pipeline's).")
    var transformer: String?

    @Option(name: .long, help: "A single-file transformer's config: diffusers' transformer/config.json (or a folder holding it).")
    var config: String?

    @Option(name: .long, help: "VAE: ae.safetensors (BFL names) or a diffusers vae/ folder.")
    var vae: String?

    @OptionGroup var parts: TextEncoderParts

    @Option(name: .long, help: "The prompt.")
    var prompt: String

    @Option(name: .long, parsing: .unconditional, help: "Image width in pixels, a multiple of 16 for FLUX's VAE (default, as diffusers: 64 × the VAE's scale factor, 1024 for FLUX).")
    var width: Int?

    @Option(name: .long, parsing: .unconditional, help: "Image height in pixels (default as --width).")
    var height: Int?

    @Option(name: .long, parsing: .unconditional, help: "Embedded guidance for guidance-distilled models (FLUX.1-dev).")
    var guidance = 3.5

    @Option(name: .long, parsing: .unconditional, help: "Seed of the initial noise.")
    var seed: UInt64 = 0

    @Option(name: .long, help: "Initial noise `noise` [1, C, H/8, W/8] (.safetensors) instead of --seed.")
    var noise: String?

    @Option(name: .long, parsing: .unconditional, help: "T5 tokens (default: 512 with guidance, 256 without, as diffusers' FLUX.1-dev/schnell).")
    var maxSequenceLength: Int?

    @Option(name: .long, help: "diffusers (resolution-dependent shift) or diffsynth (shift 3).")
    var sampler = "diffusers"

    @Option(name: .long, parsing: .unconditional, help: "Decode in tiles of this many pixels with diffusers' blending (e.g. 512), so large images fit in memory.")
    var vaeTileSize: Int?

    @Option(name: .long, parsing: .unconditional, help: "Refuse images with more pixels than this (width × height).")
    var maxImagePixels = FluxTextToImage.Limits().maxImagePixels

    @Option(name: .long, help: "Where to write the image (.png).")
    var output: String

    @Option(name: .long, help: "Also write the final `latents` [1, C, H/8, W/8] (.safetensors).")
    var outputLatents: String?

    @Option(name: .long, parsing: .unconditional, help: "Retrieve the K LoRAs of the pool closest to the prompt (AutoLoRA) and apply them with the others.")
    var autoLoras: Int?

    @OptionGroup var pool: PoolCommand.Location

    @OptionGroup var backendOptions: BackendOptions

    @OptionGroup var loraOptions: LoRAOptions

    @Flag(name: .long, help: "Print a JSON summary (timings per stage, peak memory, seed) instead of text.")
    var json = false

    static let maximumAutoLoRAs = 64

    private var limits: FluxTextToImage.Limits {
        var limits = FluxTextToImage.Limits()
        limits.maxImagePixels = maxImagePixels
        return limits
    }

    /// Whether --model names one file (a ComfyUI all-in-one checkpoint) rather than a folder.
    private var modelIsOneFile: Bool {
        var isFolder: ObjCBool = false
        guard let model, FileManager.default.fileExists(atPath: model, isDirectory: &isFolder) else { return false }
        return !isFolder.boolValue
    }

    func validate() throws {
        if let model, modelIsOneFile {
            let missing = [("--clip-tokenizer", parts.clipTokenizer), ("--t5-tokenizer", parts.t5Tokenizer)].filter { $0.1 == nil }.map(\.0)
            guard missing.isEmpty else {
                throw ValidationError("\(model) is one checkpoint file, which holds no tokenizers: give \(missing.joined(separator: " and ")) " +
                                      "(the tokenizer/ and tokenizer_2/ folders of a diffusers FLUX release)")
            }
        }
        if model == nil {
            let missing = [("--transformer", transformer), ("--vae", vae), ("--clip", parts.clip), ("--clip-tokenizer", parts.clipTokenizer),
                           ("--t5", parts.t5), ("--t5-tokenizer", parts.t5Tokenizer)].filter { $0.1 == nil }.map(\.0)
            guard missing.isEmpty else {
                throw ValidationError("give --model PIPELINE_FOLDER, or all the parts (missing: \(missing.joined(separator: ", ")))")
            }
        }
        guard FlowMatchSchedule.Kind(rawValue: sampler) != nil else {
            throw ValidationError("unknown --sampler \(sampler) (diffusers or diffsynth)")
        }
        guard loraOptions.progress == nil else { throw ValidationError("generate sets the fusion progress itself (step / steps): drop --progress") }
        guard maxImagePixels >= 1 else { throw ValidationError("--max-image-pixels must be at least 1") }
        // The numbers first, before any file is read: a mistyped size is one line, at once.
        do {
            try FluxTextToImage.check(width: width ?? 16, height: height ?? width ?? 16, steps: loraOptions.steps ?? 1, guidance: guidance,
                                      limits: limits)
        } catch { throw ValidationError("\(error)") }
        if let autoLoras, !(0...Self.maximumAutoLoRAs).contains(autoLoras) {
            throw ValidationError("--auto-loras must be in 0...\(Self.maximumAutoLoRAs), got \(autoLoras)")
        }
        if let vaeTileSize, vaeTileSize < 8 { throw ValidationError("--vae-tile-size must be at least 8 pixels") }
        if let maxSequenceLength, !(1...4096).contains(maxSequenceLength) { throw ValidationError("--max-sequence-length must be in 1...4096") }
        // Fail before the long work if the image cannot be written there.
        for path in [output] + (outputLatents.map { [$0] } ?? []) {
            let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder), isFolder.boolValue,
                  FileManager.default.isWritableFile(atPath: folder) else {
                throw ValidationError("\(path): cannot write there (\(folder) is not a writable folder)")
            }
        }
    }

    /// A pipeline part: the explicit option, else the pipeline folder's subfolder, or the
    /// all-in-one file itself (each part's loader finds its own prefix in it).
    private func part(_ explicit: String?, _ subfolder: String) -> String {
        if let explicit { return explicit }
        return modelIsOneFile ? model! : URL(fileURLWithPath: model!).appendingPathComponent(subfolder).path
    }

    func run() throws {
        let started = DispatchTime.now().uptimeNanoseconds
        let backend = try backendOptions.makeBackend()
        // Fail early on a missing or broken part, before any long work.
        for (path, kind) in [(part(transformer, "transformer"), "transformer"), (part(parts.clip, "text_encoder"), "CLIP"), (part(parts.t5, "text_encoder_2"), "T5"), (part(vae, "vae"), "VAE")]
        where !FileManager.default.fileExists(atPath: path) {
            throw ModelError.notAModel(path: path, reason: "no such file or folder (the \(kind) part of the pipeline)")
        }
        let flux = try FluxModel.load(path: part(transformer, "transformer"), config: config)
        let steps = loraOptions.steps ?? (flux.config.guidanceEmbeds ? 28 : 4)
        // diffusers' default size: default_sample_size (64) × vae_scale_factor (2^blocks).
        let decoder = try VAEDecoder.load(path: part(vae, "vae"))  // small and memory-mapped: loaded once
        let defaultSize = 64 * 2 * decoder.config.upscale
        let (width, height) = (self.width ?? defaultSize, self.height ?? defaultSize)
        var settings = FluxTextToImage.Settings(prompt: prompt, width: width, height: height, steps: steps)
        settings.guidance = guidance
        settings.seed = seed
        settings.vaeTileSize = vaeTileSize
        settings.limits = limits
        settings.sampler = FlowMatchSchedule.Kind(rawValue: sampler)!
        settings.maxSequenceLength = maxSequenceLength ?? (flux.config.guidanceEmbeds ? 512 : 256)
        if let model, !modelIsOneFile {
            let schedulerFile = URL(fileURLWithPath: model).appendingPathComponent("scheduler/scheduler_config.json")
            if FileManager.default.fileExists(atPath: schedulerFile.path) {
                settings.schedulerConfig = try FlowMatchSchedulerConfig(file: schedulerFile)
            }
        }
        if let noise { settings.noise = try SafeTensorsFile(path: noise).tensor(named: "noise").converted(to: .float32) }

        var loraOptions = self.loraOptions
        var retrieved: [(name: String, similarity: Float)] = []
        if let autoLoras, autoLoras > 0 {
            let query = try RetrievalQueryEncoder(tokenizer: CLIPTokenizer(folder: part(parts.clipTokenizer, "tokenizer"), rules: parts.clipTokenizerRules),
                                                  encoder: CLIPTextEncoder.load(path: part(parts.clip, "text_encoder")))
            let matches = try pool.open().search(try query.embed(prompt, on: backend), k: autoLoras)
            guard !matches.isEmpty else { throw ValidationError("--auto-loras: the pool at \(pool.path) has no LoRA embedded at this CLIP's width") }
            for match in matches {
                guard match.entry.isPresent else {
                    throw ValidationError("--auto-loras: pool entry \(match.entry.name) points at \(match.entry.path), which is missing (pool remove it or add it again)")
                }
                loraOptions.loras.append(match.entry.path)
                retrieved.append((match.entry.name, match.similarity))
            }
            if !json {
                FileHandle.standardError.write(Data("retrieved: \(retrieved.map { String(format: "%@ (%.3f)", $0.name, $0.similarity) }.joined(separator: ", "))\n".utf8))
            }
        }
        let plan = try loraOptions.plan(flux, backend: backend)
        let reporter = ProgressReporter(enabled: progressEnabled(json: json))
        let result = try FluxTextToImage(settings: settings, backend: backend).run(
            encoders: {
                try FluxTextEncoders.load(clip: part(parts.clip, "text_encoder"), clipTokenizer: part(parts.clipTokenizer, "tokenizer"),
                                          t5: part(parts.t5, "text_encoder_2"), t5Tokenizer: part(parts.t5Tokenizer, "tokenizer_2"),
                                          clipRules: parts.clipTokenizerRules)
            },
            model: flux, plan: plan, vae: { decoder },
            progress: reporter.report)
        reporter.finish()

        var parameters = "steps: \(steps), size: \(width)x\(height), seed: \(noise == nil ? String(seed) : "noise file"), sampler: \(sampler)"
        if flux.config.guidanceEmbeds { parameters += ", guidance: \(guidance)" }
        if !loraOptions.loras.isEmpty { parameters += ", loras: \(loraOptions.loras.joined(separator: " "))" }
        if let fusion = loraOptions.fusion { parameters += ", fusion: \(fusion)" }
        if let content = loraOptions.content, let style = loraOptions.style { parameters += ", content: \(content), style: \(style)" }
        // The image and the latents land together or not at all.
        let files = AtomicFile.Transaction()
        try PNGWriter.write(pixels: result.pixels, width: width, height: height,
                            text: [("prompt", prompt), ("parameters", parameters), ("Software", "LoRAFuse \(LoRAFuseCommand.configuration.version)")],
                            to: output, in: files)
        if let outputLatents {
            try SafeTensorsWriter.write([("latents", result.latents)], metadata: ["producer": "lorafuse generate", "prompt": prompt,
                                                                                "parameters": parameters], to: outputLatents, in: files)
        }
        if let failure = files.commit() { throw ValidationError("\(output): cannot write: \(failure)") }
        let total = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        let sampling = result.stepSeconds.reduce(0, +)
        if json {
            var fields: [String: Any] = [
                "command": "generate", "backend": backend.name, "device": backend.device.name, "seconds": total,
                "encode_seconds": result.encodeSeconds, "sampling_seconds": sampling,
                "seconds_per_step": sampling / Double(max(1, steps)), "step_seconds": result.stepSeconds,
                "decode_seconds": result.decodeSeconds, "peak_rss_bytes": PeakMemory.residentBytes(),
                "seed": seed, "steps": steps, "width": width, "height": height, "sampler": sampler, "output": output,
            ]
            if noise != nil { fields["noise"] = noise }
            if let fusion = loraOptions.fusion { fields["fusion"] = fusion }
            if !loraOptions.loras.isEmpty { fields["loras"] = loraOptions.loras }
            if let merge = plan.mergeSeconds { fields["merge_seconds"] = merge }
            fields["graphs_built"] = result.graphCount
            fields["resident_weight_bytes"] = [backend.name: result.residentWeightBytes]
            if let peak = result.peakDeviceBytes {
                fields["device_memory"] = ["peak_bytes": peak, "uploaded_bytes_per_forward": result.uploadedWeightBytes,
                                           "upload_wait_seconds": result.uploadWaitSeconds] as [String: Any]
            }
            if !retrieved.isEmpty { fields["retrieved"] = retrieved.map { ["name": $0.name, "similarity": Double($0.similarity)] as [String: Any] } }
            print(try JSONOutput.line(fields))
        } else {
            print(String(format: "generate on %@ (%@): %d steps, %.3f s/step; encode %.3f s, decode %.3f s; %.3f s in all, peak RSS %.1f MiB; wrote %@",
                         backend.name, backend.device.name, steps, sampling / Double(max(1, steps)), result.encodeSeconds,
                         result.decodeSeconds, total, Double(PeakMemory.residentBytes()) / 1048576, output))
        }
    }
}
