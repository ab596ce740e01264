import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline

typealias GenerationRequest = Components.Schemas.GenerationRequest
typealias LoRARef = Components.Schemas.LoRARef

/// A request the server refuses: what is wrong and the field at fault (a JSON path).
struct RequestError: Error, CustomStringConvertible {
    let field: String?
    let message: String
    init(_ field: String?, _ message: String) {
        self.field = field
        self.message = message
    }
    var description: String { field.map { "\($0): \(message)" } ?? message }
}

/// Raised from the progress callback when the job was asked to stop.
struct JobCancelled: Error {}

/// The pipeline `lorafuse generate` runs, with everything loaded once: the transformer, the
/// text encoders, the VAE, the AutoLoRA merger and retrieval encoder when configured, and
/// LoRA files by content hash. Requests are checked before they are queued (`check`), so a
/// queued job fails only on what cannot be known before it runs.
final class FluxImageService: Sendable {
    let settings: ServeSettings
    let model: FluxModel
    let modelName: String
    private let encoders: FluxTextEncoders
    private let decoder: VAEDecoder
    private let schedulerConfig: FlowMatchSchedulerConfig?
    private let mergers: AutoLoRAMergers?
    private let retrieval: RetrievalQueryEncoder?
    let pool: (any RetrievalPool)?
    let loras: LoRACache
    /// The default edge in pixels, as `lorafuse generate`'s (diffusers' 64 × the VAE's scale factor).
    let defaultSize: Int

    init(settings: ServeSettings) async throws {
        self.settings = settings
        let folder = URL(fileURLWithPath: settings.model)
        modelName = folder.standardizedFileURL.lastPathComponent
        for part in ["transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"]
        where !FileManager.default.fileExists(atPath: folder.appendingPathComponent(part).path) {
            throw ModelError.notAModel(path: settings.model, reason: "not a diffusers FLUX pipeline folder (no \(part)/)")
        }
        let model = try FluxModel.load(path: folder.appendingPathComponent("transformer").path)
        self.model = model
        decoder = try VAEDecoder.load(path: folder.appendingPathComponent("vae").path)
        encoders = try FluxTextEncoders.load(pipeline: settings.model)
        let scheduler = folder.appendingPathComponent("scheduler/scheduler_config.json")
        schedulerConfig = FileManager.default.fileExists(atPath: scheduler.path) ? try FlowMatchSchedulerConfig(file: scheduler) : nil
        mergers = try settings.fusionWeights.map { try AutoLoRAMergers.load(path: $0, config: model.config) }
        if let poolPath = settings.poolPath {
            pool = try await RetrievalPools.open(poolPath)
            retrieval = RetrievalQueryEncoder(tokenizer: encoders.clipTokenizer, encoder: encoders.clip)
        } else {
            pool = nil
            retrieval = nil
        }
        loras = LoRACache(byteBudget: settings.loraCacheBytes)
        defaultSize = 64 * 2 * decoder.config.upscale
    }

    // MARK: Checking

    /// A request's steps (its own, or the model's default).
    func steps(of request: GenerationRequest) -> Int { request.steps ?? (model.config.guidanceEmbeds ? 28 : 4) }

    /// Refuses what the server would not run — sizes, steps, LoRA names, scales, methods —
    /// naming the field; loads the named LoRAs (into the cache) so one made for another base
    /// model is refused here rather than failing in the queue.
    func check(_ request: GenerationRequest) throws(RequestError) {
        let limits = settings.limits
        guard request.prompt.utf8.count <= settings.maxPromptBytes else {
            throw RequestError("prompt", "longer than the server's \(settings.maxPromptBytes)-byte limit")
        }
        if let model = request.model, model != modelName {
            throw RequestError("model", "this server serves \(modelName), one base model per server; send the request to a server of \(model)")
        }
        let (width, height) = size(of: request)
        for (name, value) in [("width", width), ("height", height)] where value <= 0 || value % (2 * decoder.config.upscale) != 0 {
            throw RequestError(name, "must be a positive multiple of \(2 * decoder.config.upscale), got \(value)")
        }
        let (pixels, overflow) = width.multipliedReportingOverflow(by: height)
        guard !overflow, pixels <= limits.maxImagePixels else {
            throw RequestError("width", "\(width)×\(height) is more than the server's \(limits.maxImagePixels)-pixel limit")
        }
        guard (1...limits.maxSteps).contains(steps(of: request)) else {
            throw RequestError("steps", "must be in 1...\(limits.maxSteps), got \(steps(of: request))")
        }
        if let guidance = request.guidance, !(guidance.isFinite && limits.guidanceRange.contains(guidance)) {
            throw RequestError("guidance", "must be a finite number in \(limits.guidanceRange), got \(guidance)")
        }
        if let seed = request.seed, seed < 0 { throw RequestError("seed", "must be at least 0, got \(seed)") }
        if let length = request.maxSequenceLength, !(1...4096).contains(length) {
            throw RequestError("max_sequence_length", "must be in 1...4096, got \(length)")
        }
        let loras = request.loras ?? []
        guard loras.count <= settings.maxLoRAs else { throw RequestError("loras", "at most \(settings.maxLoRAs) LoRAs, got \(loras.count)") }
        for (index, lora) in loras.enumerated() { _ = try adapter(lora, field: "loras[\(index)]") }
        let auto = request.autoLoras ?? 0
        guard (0...settings.maxAutoLoRAs).contains(auto) else {
            throw RequestError("auto_loras", "must be in 0...\(settings.maxAutoLoRAs), got \(auto)")
        }
        if auto > 0, pool == nil { throw RequestError("auto_loras", "this server has no LoRA pool (start it with --pool)") }
        guard let fusion = request.fusion else {
            return
        }
        switch fusion.method {
        case .autolora:
            guard mergers != nil else { throw RequestError("fusion.method", "autolora needs the server started with --fusion-weights") }
            guard fusion.content == nil, fusion.style == nil, request.merge != true else {
                throw RequestError("fusion", "autolora gates `loras`: no content, style or merge")
            }
            guard (1...8).contains(loras.count + auto) else {
                throw RequestError("loras", "autolora gates 1 to 8 LoRAs (loras and auto_loras), got \(loras.count + auto)")
            }
        default:
            guard let content = fusion.content else { throw RequestError("fusion.content", "\(fusion.method.rawValue) needs a content LoRA") }
            guard let style = fusion.style else { throw RequestError("fusion.style", "\(fusion.method.rawValue) needs a style LoRA") }
            _ = try adapter(content, field: "fusion.content")
            _ = try adapter(style, field: "fusion.style")
            if request.merge == true, fusion.method != .merge {
                throw RequestError("merge", "merging goes only with fusion merge (the others choose LoRAs per step)")
            }
            for (name, value) in [("fusion.klora_alpha", fusion.kloraAlpha), ("fusion.klora_beta", fusion.kloraBeta),
                                  ("fusion.estlora_alpha", fusion.estloraAlpha), ("fusion.estlora_beta", fusion.estloraBeta)]
            where value.map({ !($0.isFinite && abs($0) <= 1000) }) ?? false {
                throw RequestError(name, "must be a finite number in [−1000, 1000]")
            }
            if let alpha = fusion.estloraAlpha, alpha <= 0 { throw RequestError("fusion.estlora_alpha", "must be positive") }
            if let every = fusion.switchEvery, every < 1 { throw RequestError("fusion.switch_every", "must be at least 1") }
            if let fraction = fusion.fixedFraction, !(0...1).contains(fraction) { throw RequestError("fusion.fixed_fraction", "must be in [0, 1]") }
            if let seed = fusion.seed, seed < 0 { throw RequestError("fusion.seed", "must be at least 0") }
        }
    }

    func size(of request: GenerationRequest) -> (width: Int, height: Int) {
        let width = request.width ?? defaultSize
        return (width, request.height ?? request.width ?? defaultSize)
    }

    /// A LoRA a request names, resolved under the --lora-dir folders and loaded (cached).
    private func adapter(_ reference: LoRARef, field: String) throws(RequestError) -> LoRAAdapter {
        let scale = reference.scale ?? 1
        guard scale.isFinite, abs(scale) <= settings.maxLoRAScale else {
            throw RequestError(field + ".scale", "must be a finite number in [−\(settings.maxLoRAScale), \(settings.maxLoRAScale)], got \(scale)")
        }
        let path = try LoRAFolders.resolve(reference.name, in: settings.loraFolders, field: field + ".name")
        do {
            return LoRAAdapter(file: try loras.load(path: path, model: model), scale: Float(scale))
        } catch {
            throw RequestError(field + ".name", "\(reference.name): \(error)")
        }
    }

    // MARK: Running

    /// Runs a checked request on `backend`: the PNG `lorafuse generate` would write (same
    /// pixels and text), the LoRAs retrieval chose, and the device memory used. `progress`
    /// hears each step and throws `JobCancelled` to stop.
    func generate(_ request: GenerationRequest, on backend: any Backend,
                  progress: @escaping (_ step: Int, _ steps: Int, _ seconds: Double) throws -> Void) throws -> (png: Data, retrieved: [String], peakDeviceBytes: Int?) {
        let steps = steps(of: request)
        let (width, height) = size(of: request)
        var settings = FluxTextToImage.Settings(prompt: request.prompt, width: width, height: height, steps: steps)
        settings.guidance = request.guidance ?? 3.5
        settings.seed = UInt64(request.seed ?? 0)
        settings.limits = self.settings.limits
        settings.sampler = request.sampler.flatMap { FlowMatchSchedule.Kind(rawValue: $0.rawValue) } ?? .diffusers
        settings.maxSequenceLength = request.maxSequenceLength ?? (model.config.guidanceEmbeds ? 512 : 256)
        if let schedulerConfig { settings.schedulerConfig = schedulerConfig }

        var loras = request.loras ?? []
        var retrieved: [String] = []
        if let auto = request.autoLoras, auto > 0, let pool, let retrieval {
            let query = try retrieval.embed(request.prompt, on: backend)
            for match in try blockingWait({ try await pool.nearest(query, k: auto) }) {
                guard match.entry.isPresent else { throw RequestError("auto_loras", "pool entry \(match.entry.name) points at \(match.entry.path), which is missing") }
                retrieved.append(match.entry.name)
                loras.append(LoRARef(name: match.entry.path, scale: 1))
            }
        }
        let adapters = try loras.enumerated().map { index, lora in
            index < (request.loras?.count ?? 0) ? try adapter(lora, field: "loras[\(index)]")
                : LoRAAdapter(file: try self.loras.load(path: lora.name, model: model), scale: 1)
        }
        let plan = try plan(request, adapters: adapters, on: backend)
        let result = try FluxTextToImage(settings: settings, backend: backend).run(
            encoders: { encoders }, model: model, plan: plan, vae: { decoder }, progress: progress)
        let png = try PNGWriter.encode(pixels: result.pixels, width: width, height: height,
                                       text: [("prompt", request.prompt), ("Software", "LoRAFuse serve")])
        return (png, retrieved, result.peakDeviceBytes)
    }

    private func plan(_ request: GenerationRequest, adapters: [LoRAAdapter], on backend: any Backend) throws -> FusionPlan {
        guard let fusion = request.fusion else {
            return try FusionPlan.plain(model: model, adapters: adapters, merge: request.merge ?? false, on: backend)
        }
        guard let method = FusionMethod(rawValue: fusion.method.rawValue) else {
            return try FusionPlan.autolora(model: model, adapters: adapters, mergers: mergers!)
        }
        var chosen = LoRAFusion(method: method, content: try adapter(fusion.content!, field: "fusion.content"),
                                style: try adapter(fusion.style!, field: "fusion.style"))
        chosen.switchEvery = fusion.switchEvery ?? 1
        chosen.fixedFraction = fusion.fixedFraction ?? 0.5
        chosen.seed = UInt64(fusion.seed ?? 0)
        let kloraSchedule = KLoRAPlan.Schedule(rawValue: fusion.kloraSchedule?.rawValue ?? "linear") ?? .linear
        let estSchedule = ESTLoRAPlan.Schedule(rawValue: fusion.estloraSchedule?.rawValue ?? "periodic") ?? .periodic
        let estAlpha = fusion.estloraAlpha ?? ESTLoRAPlan.defaultAlpha
        return try FusionPlan.pair(model: model, fusion: chosen, adapters: adapters, merge: request.merge ?? false,
                                   klora: (fusion.kloraAlpha ?? 1.5, fusion.kloraBeta ?? 0.5, kloraSchedule),
                                   estlora: (estAlpha, fusion.estloraBeta ?? estSchedule.defaultBeta(alpha: estAlpha), estSchedule),
                                   on: backend)
    }
}

/// LoRA names confined to the configured folders.
enum LoRAFolders {
    /// The file `name` stands for under one of `folders` (the first that has it): a relative
    /// path of plain components (no `.`, `..`, empty parts or NUL), `.safetensors` added when
    /// missing, that after links are resolved still lies inside the folder.
    static func resolve(_ name: String, in folders: [String], field: String) throws(RequestError) -> String {
        guard !folders.isEmpty else { throw RequestError(field, "this server takes no LoRAs (start it with --lora-dir FOLDER)") }
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        guard !name.isEmpty, !name.hasPrefix("/"), !name.contains("\0"), name.utf8.count <= 1024,
              parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && !$0.contains("\\") }) else {
            throw RequestError(field, "'\(name.prefix(200))' is not a LoRA name: a path relative to a LoRA folder, without '.', '..' or empty parts")
        }
        let file = name.hasSuffix(".safetensors") ? name : name + ".safetensors"
        for folder in folders {
            let root = URL(fileURLWithPath: folder).resolvingSymlinksInPath().standardizedFileURL.path
            let candidate = URL(fileURLWithPath: root).appendingPathComponent(file).resolvingSymlinksInPath().standardizedFileURL.path
            var isFolder: ObjCBool = false
            guard candidate.hasPrefix(root + "/"), FileManager.default.fileExists(atPath: candidate, isDirectory: &isFolder), !isFolder.boolValue else { continue }
            return candidate
        }
        throw RequestError(field, "no LoRA '\(name.prefix(200))' in the server's LoRA folders (GET /loras lists them)")
    }

    /// Every `.safetensors` under `folders`, as the names requests use, with their sizes.
    static func list(_ folders: [String]) -> [(name: String, bytes: Int)] {
        var found: [(String, Int)] = []
        for folder in folders {
            let root = URL(fileURLWithPath: folder).resolvingSymlinksInPath().standardizedFileURL
            guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.fileSizeKey, .isRegularFileKey]) else { continue }
            for case let url as URL in walker where url.pathExtension == "safetensors" {
                let values = try? url.resourceValues(forKeys: [.fileSizeKey, .isRegularFileKey])
                guard values?.isRegularFile == true else { continue }
                let relative = String(url.standardizedFileURL.path.dropFirst(root.path.count + 1))
                found.append((relative, values?.fileSize ?? 0))
            }
        }
        return found.sorted { $0.0 < $1.0 }
    }
}
