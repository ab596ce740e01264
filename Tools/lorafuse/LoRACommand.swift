import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// `--lora FILE[:SCALE]…`, `--merge`, `--allow-unmatched-lora-keys`, and the fusion methods
/// (`--fusion klora --content … --style … --progress P`), shared by the commands that run
/// the transformer.
struct LoRAOptions: ParsableArguments {
    @Option(name: .customLong("lora"), help: "A LoRA file with an optional scale, FILE[:SCALE] (default 1); repeat for several.")
    var loras: [String] = []

    @Flag(name: .long, help: "Merge the LoRAs into the weights on the backend (W + Σ s·α/r·B·A) instead of applying them hot.")
    var merge = false

    @Flag(name: .customLong("allow-unmatched-lora-keys"), help: "Warn about LoRA keys that match no layer instead of failing.")
    var allowUnmatchedLoRAKeys = false

    @Option(name: .long, help: "How --content and --style are fused: merge, klora, estlora, switch, composite, fixed or random; or autolora (gates the --lora files with --fusion-weights).")
    var fusion: String?

    @Option(name: .customLong("fusion-weights"), help: "autolora: the merger checkpoint (LoRAFusion-preview-FLUX.1-dev layout).")
    var fusionWeights: String?

    @Option(name: .long, help: "Content LoRA for --fusion, FILE[:SCALE].")
    var content: String?

    @Option(name: .long, help: "Style LoRA for --fusion, FILE[:SCALE].")
    var style: String?

    @Option(name: .long, parsing: .unconditional, help: "Sampling progress p = step / steps in [0, 1] (0: pure noise) for --fusion (dit; generate sets it per step).")
    var progress: Double?

    @Option(name: .long, parsing: .unconditional, help: "Sampling steps (generate: the run's steps, default 28, or 4 without guidance; dit: the run --progress belongs to, default 28).")
    var steps: Int?

    @Option(name: .customLong("switch-every"), parsing: .unconditional, help: "switch: steps between LoRA changes (τ).")
    var switchEvery = 1

    @Option(name: .customLong("fixed-fraction"), parsing: .unconditional, help: "fixed: share of the steps that use the content LoRA.")
    var fixedFraction = 0.5

    @Option(name: .customLong("fusion-seed"), parsing: .unconditional, help: "random: seed of the per-layer choice.")
    var fusionSeed: UInt64 = 0

    @OptionGroup var klora: KLoRASettings

    @OptionGroup var estlora: ESTLoRASettings

    func validate() throws {
        guard (0...1).contains(fixedFraction) else { throw ValidationError("--fixed-fraction must be in [0, 1], got \(fixedFraction)") }
        if let progress, !(0...1).contains(progress) { throw ValidationError("--progress must be in [0, 1], got \(progress)") }
        let maxSteps = FluxTextToImage.Limits().maxSteps
        if let steps, !(1...maxSteps).contains(steps) { throw ValidationError("--steps must be in 1...\(maxSteps), got \(steps)") }
        guard switchEvery >= 1 else { throw ValidationError("--switch-every must be at least 1, got \(switchEvery)") }
    }

    func load(_ argument: String, model: FluxModel?) throws -> LoRAAdapter {
        let (path, scale) = try LoRAAdapter.parseArgument(argument)
        let file = try LoRAFile.load(path: path, model: model, allowUnmatchedKeys: allowUnmatchedLoRAKeys)
        if !file.unmatchedKeys.isEmpty {
            FileHandle.standardError.write(Data("warning: \(path): ignoring \(file.unmatchedKeys.count) key(s) that match no layer: \(file.unmatchedKeys.prefix(8).joined(separator: ", "))\(file.unmatchedKeys.count > 8 ? ", …" : "")\n".utf8))
        }
        return LoRAAdapter(file: file, scale: scale)
    }

    /// Reads the options into the library's `FusionPlan`: the LoRAs hot, merged on
    /// `backend`, AutoLoRA, or a content/style method chosen per step.
    func plan(_ model: FluxModel, backend: any Backend) throws -> FusionPlan {
        let adapters = try loras.map { try load($0, model: model) }
        guard let fusion else {
            guard fusionWeights == nil else { throw ValidationError("--fusion-weights needs --fusion autolora") }
            guard content == nil, style == nil else { throw ValidationError("--content and --style need --fusion METHOD") }
            return try FusionPlan.plain(model: model, adapters: adapters, merge: merge, on: backend)
        }
        switch FusionKind(name: fusion) {
        case nil:
            throw ValidationError("unknown --fusion \(fusion) (one of: \(FusionKind.allNames.joined(separator: ", ")))")
        case .autolora:
            guard let fusionWeights else { throw ValidationError("--fusion autolora needs --fusion-weights FILE") }
            guard content == nil, style == nil, !merge else {
                throw ValidationError("--fusion autolora gates the --lora files: no --content, --style or --merge")
            }
            return try FusionPlan.autolora(model: model, adapters: adapters, mergers: AutoLoRAMergers.load(path: fusionWeights, config: model.config))
        case let .pair(method):
            guard let content, let style else { throw ValidationError("--fusion \(fusion) needs --content FILE[:SCALE] and --style FILE[:SCALE]") }
            guard !merge || method == .merge else { throw ValidationError("--merge only goes with --fusion merge (the others choose LoRAs per step)") }
            var chosen = LoRAFusion(method: method, content: try load(content, model: model), style: try load(style, model: model))
            chosen.switchEvery = switchEvery
            chosen.fixedFraction = fixedFraction
            chosen.seed = fusionSeed
            return try FusionPlan.pair(model: model, fusion: chosen, adapters: adapters, merge: merge, klora: try klora.parameters(),
                                     estlora: try estlora.parameters(), on: backend)
        }
    }

    /// The passes at `--progress` of a `--steps` run (dit).
    func transformers(_ model: FluxModel, backend: any Backend) throws -> (passes: [FluxTransformer], mergeSeconds: Double?) {
        let progress = progress ?? 0  // both checked by validate()
        let steps = steps ?? 28
        let plan = try plan(model, backend: backend)
        return (plan.step(progress: progress, step: min(steps - 1, Int((progress * Double(steps)).rounded())), of: steps).passes, plan.mergeSeconds)
    }
}

/// K-LoRA's schedule: `--klora-alpha`, `--klora-beta`, `--klora-schedule`.
struct KLoRASettings: ParsableArguments {
    @Option(name: .customLong("klora-alpha"), parsing: .unconditional, help: "α of S(p) = α·p + β (paper: 1.5).")
    var alpha: Double = 1.5

    @Option(name: .customLong("klora-beta"), parsing: .unconditional, help: "β of S(p) = α·p + β (paper: 0.5).")
    var beta: Double = 0.5

    @Option(name: .customLong("klora-schedule"), help: "linear: S(p) = α·p + β; periodic: S*(p) = (1.5·p + 1.3) mod 1.5.")
    var schedule: String = "linear"

    /// |α| and |β| beyond this make S(p) pick one LoRA everywhere; they are typos.
    static let parameterBound = 1000.0

    func validate() throws {
        for (name, value) in [("--klora-alpha", alpha), ("--klora-beta", beta)] where !(value.isFinite && abs(value) <= Self.parameterBound) {
            throw ValidationError("\(name) must be a finite number in [−\(Int(Self.parameterBound)), \(Int(Self.parameterBound))], got \(value)")
        }
        _ = try chosenSchedule()
    }

    private func chosenSchedule() throws -> KLoRAPlan.Schedule {
        guard let chosen = KLoRAPlan.Schedule(rawValue: schedule) else {
            throw ValidationError("unknown --klora-schedule \(schedule) (linear or periodic)")
        }
        return chosen
    }

    /// α, β and the schedule, as `FusionPlan.pair` takes them.
    func parameters() throws -> (alpha: Double, beta: Double, schedule: KLoRAPlan.Schedule) {
        (alpha, beta, try chosenSchedule())
    }

    func fusion(plan: KLoRAPlan, content: LoRAAdapter, style: LoRAAdapter) throws -> KLoRAFusion {
        var fusion = KLoRAFusion(plan: plan, content: content, style: style)
        (fusion.alpha, fusion.beta, fusion.schedule) = try parameters()
        return fusion
    }
}

/// EST-LoRA's schedule: `--estlora-alpha`, `--estlora-beta`, `--estlora-schedule`.
struct ESTLoRASettings: ParsableArguments {
    @Option(name: .customLong("estlora-alpha"), parsing: .unconditional, help: "α of S(t) = α·t + β (the authors' code: 1.5).")
    var alpha: Double = ESTLoRAPlan.defaultAlpha

    @Option(name: .customLong("estlora-beta"), parsing: .unconditional, help: "β of S(t) (default as the authors' FLUX script: 0.85·α for periodic, 0.5·α for linear).")
    var beta: Double?

    @Option(name: .customLong("estlora-schedule"), help: "periodic (the code's s*): S(t) = (α·t + β) mod α; linear: S(t) = α·t + β.")
    var schedule: String = ESTLoRAPlan.Schedule.periodic.rawValue

    func validate() throws {
        for (name, value) in [("--estlora-alpha", alpha), ("--estlora-beta", beta ?? 0)] where !(value.isFinite && abs(value) <= KLoRASettings.parameterBound) {
            throw ValidationError("\(name) must be a finite number in [−\(Int(KLoRASettings.parameterBound)), \(Int(KLoRASettings.parameterBound))], got \(value)")
        }
        guard alpha > 0 else { throw ValidationError("--estlora-alpha must be positive (the periodic schedule takes S mod α), got \(alpha)") }
        _ = try chosenSchedule()
    }

    private func chosenSchedule() throws -> ESTLoRAPlan.Schedule {
        guard let chosen = ESTLoRAPlan.Schedule(rawValue: schedule == "s*" ? "periodic" : schedule) else {
            throw ValidationError("unknown --estlora-schedule \(schedule) (periodic, also written s*, or linear)")
        }
        return chosen
    }

    /// α, β and the schedule, as `FusionPlan.pair` takes them.
    func parameters() throws -> (alpha: Double, beta: Double, schedule: ESTLoRAPlan.Schedule) {
        let chosen = try chosenSchedule()
        return (alpha, beta ?? chosen.defaultBeta(alpha: alpha), chosen)
    }
}

/// The files a per-pair plan reads: `--content`, `--style`, an optional `--model` to check
/// them against, and the backend that computes the plan.
struct PairPlanOptions: ParsableArguments {
    @Option(name: .long, help: "Content LoRA file.")
    var content: String

    @Option(name: .long, help: "Style LoRA file.")
    var style: String

    @Option(name: .long, help: "A FLUX model to check both LoRAs against (optional; it also gives the layer order).")
    var model: String?

    @Option(name: .long, help: "A single-file --model's config: diffusers' transformer/config.json (or a folder holding it).")
    var config: String?

    @OptionGroup var backendOptions: BackendOptions

    func load() throws -> (any Backend, FluxModel?, LoRAFile, LoRAFile) {
        let backend = try backendOptions.makeBackend()
        let flux = try model.map { try FluxModel.load(path: $0, config: config) }
        return (backend, flux, try LoRAFile.load(path: content, model: flux), try LoRAFile.load(path: style, model: flux))
    }
}

/// `lorafuse klora plan`: what K-LoRA will do with a content and a style LoRA.
struct KLoRACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "klora", abstract: "K-LoRA: per-layer Top-K selection between a content and a style LoRA.",
        subcommands: [KLoRAPlanCommand.self])
}

struct KLoRAPlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Per layer S_c, S_s, K and the switch point; the share of content layers at the start, middle and end.")

    @OptionGroup var pair: PairPlanOptions

    @OptionGroup var klora: KLoRASettings

    @Flag(name: .long, help: "Do not read or write the plan cache ($LORAFUSE_CACHE/klora or ~/.cache/lorafuse/klora).")
    var noCache = false

    @Flag(name: .long, help: "Print one JSON object.")
    var json = false

    func run() throws {
        let (backend, flux, contentFile, styleFile) = try pair.load()
        let start = DispatchTime.now().uptimeNanoseconds
        let planner = KLoRAPlanner(backend: backend, cacheFolder: noCache ? nil : KLoRAPlanner.defaultCacheFolder)
        let plan = try planner.plan(content: contentFile, style: styleFile, config: flux?.config)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let fusion = try klora.fusion(plan: plan, content: LoRAAdapter(file: contentFile), style: LoRAAdapter(file: styleFile))
        let checkpoints = [0.0, 0.5, 1.0]
        let shares = checkpoints.map { p in
            Double(plan.units.filter { plan.usesContent($0, progress: p, alpha: fusion.alpha, beta: fusion.beta, schedule: fusion.schedule) }.count)
                / Double(max(plan.units.count, 1))
        }
        if json {
            let units: [[String: Any]] = plan.units.map { unit in
                ["layers": unit.layers, "k": unit.k, "content_rank": unit.contentRank, "style_rank": unit.styleRank,
                 "content_topk": unit.contentTopK, "style_topk": unit.styleTopK, "content_abs_sum": unit.contentAbsSum,
                 "style_abs_sum": unit.styleAbsSum, "switch_progress": plan.switchProgress(unit, alpha: fusion.alpha, beta: fusion.beta)]
            }
            print(try JSONOutput.line(["command": "klora plan", "backend": backend.name, "device": backend.device.name,
                                       "seconds": seconds, "gamma": plan.gamma, "units": units, "content_only": plan.contentOnly,
                                       "style_only": plan.styleOnly, "content_share_start": shares[0], "content_share_middle": shares[1],
                                       "content_share_end": shares[2]]))
            return
        }
        let width = max(5, plan.units.map { $0.layers.joined(separator: "+").count }.max() ?? 0)
        func padded(_ text: String) -> String { text.padding(toLength: max(width, text.count), withPad: " ", startingAt: 0) }
        print(padded("layer") + "      K          S_c          S_s   switch p*")
        for unit in plan.units {
            let name = unit.layers.count == 1 ? unit.layers[0] : unit.layers.joined(separator: "+")
            print(padded(name) + String(format: " %6d %12.5g %12.5g %11.3f", unit.k, unit.contentTopK, unit.styleTopK,
                                        plan.switchProgress(unit, alpha: fusion.alpha, beta: fusion.beta)))
        }
        print(String(format: "γ = %.5g; %d shared unit(s), %d content-only and %d style-only layer(s); plan in %.3f s on %@",
                     plan.gamma, plan.units.count, plan.contentOnly.count, plan.styleOnly.count, seconds, backend.name))
        print(String(format: "content share of shared units (%@ schedule): start %.0f%%, middle %.0f%%, end %.0f%%",
                     klora.schedule, 100 * shares[0], 100 * shares[1], 100 * shares[2]))
    }
}

struct LoRACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora", abstract: "Look inside LoRA files, or embed one for retrieval.", subcommands: [LoRAInspectCommand.self, LoRAEmbedCommand.self])
}

/// `lorafuse lora inspect FILE`: the detected format, rank and alpha per module, the
/// transformer layers each one changes, and the keys that match nothing.
struct LoRAInspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Show a LoRA file's format, ranks, alphas, target layers and unmatched keys.")

    @Argument(help: "The LoRA .safetensors file.")
    var file: String

    @Option(name: .long, help: "A FLUX model to check the LoRA against (layer widths, final modulation order).")
    var model: String?

    @Option(name: .long, help: "A single-file --model's config: diffusers' transformer/config.json (or a folder holding it).")
    var config: String?

    @Flag(name: .long, help: "Print one JSON object.")
    var json = false

    func run() throws {
        let flux = try model.map { try FluxModel.load(path: $0, config: config) }
        let lora = try LoRAFile.load(path: file, model: flux, allowUnmatchedKeys: true)
        var bySource: [String: [LoRAModule]] = [:]
        for module in lora.modules { bySource[module.sourceModule, default: []].append(module) }
        let sources = bySource.keys.sorted()
        if json {
            let modules: [[String: Any]] = sources.map { source in
                let parts = bySource[source]!
                return ["module": source, "rank": parts[0].rank, "alpha": Double(parts[0].alpha), "dtype": parts[0].down.dtype.name,
                        "layers": parts.map(\.layer)]
            }
            print(try JSONOutput.line(["command": "lora inspect", "file": file, "format": lora.format.rawValue,
                                       "alpha_source": lora.alphaSource.rawValue, "modules": modules, "layers": lora.modules.count,
                                       "unmatched_keys": lora.unmatchedKeys]))
            return
        }
        let ranks = Set(lora.modules.map(\.rank)).sorted().map(String.init).joined(separator: ", ")
        print("\(file): \(lora.format.rawValue) LoRA, \(sources.count) module(s) on \(lora.modules.count) layer(s), rank \(ranks), alpha from \(lora.alphaSource.rawValue)")
        let width = max(6, sources.map(\.count).max() ?? 0)
        func padded(_ text: String, _ count: Int) -> String { text.padding(toLength: max(count, text.count), withPad: " ", startingAt: 0) }
        print(padded("module", width) + "  rank     alpha  dtype  layers")
        for source in sources {
            let parts = bySource[source]!
            print(padded(source, width) + String(format: "  %4d  %8.4g  %-5@  ", parts[0].rank, Double(parts[0].alpha),
                                                 parts[0].down.dtype.name as NSString) + parts.map(\.layer).joined(separator: ", "))
        }
        if !lora.unmatchedKeys.isEmpty {
            print("\(lora.unmatchedKeys.count) unmatched key(s): " + lora.unmatchedKeys.joined(separator: ", "))
        }
    }
}

/// `lorafuse lora embed`: the retriever's embedding of one LoRA (docs/contracts.md).
struct LoRAEmbedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed", abstract: "Embed a LoRA with AutoLoRA's weight encoder: `embedding` [D] float32.")

    @Option(name: .long, help: "The weight encoder (research-code names, .safetensors).")
    var encoder: String

    @Option(name: .long, help: "The LoRA file.")
    var lora: String

    @Option(name: .long, help: "Where to write `embedding` (.safetensors).")
    var output: String?

    @OptionGroup var backendOptions: BackendOptions

    @Option(name: .customLong("repeat"), parsing: .unconditional, help: "Encodings to time after loading; the best is reported.")
    var repeatCount = 1

    @Flag(name: .long, help: "Print a JSON line with timings.")
    var json = false

    func run() throws {
        let start = DispatchTime.now().uptimeNanoseconds
        let backend = try backendOptions.makeBackend()
        let weights = try LoRAWeightEncoder.load(path: encoder)
        let file = try LoRAFile.load(path: lora, allowUnmatchedKeys: true)
        let graph = try weights.graph(for: file)
        let load = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        var best = Double.infinity
        var embedding: [Float] = []
        for _ in 0..<max(1, repeatCount) {
            let begin = DispatchTime.now().uptimeNanoseconds
            embedding = try backend.execute(graph, inputs: [:]).outputs[0].floats()
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9)
        }
        if let output {
            try SafeTensorsWriter.write([("embedding", HostTensor(shape: [embedding.count], floats: embedding))],
                                        metadata: ["producer": "lorafuse lora embed", "encoder_version": weights.version], to: output)
        }
        if json {
            print(try JSONOutput.line(["command": "lora embed", "backend": backend.name, "device": backend.device.name, "seconds": best,
                                       "load_seconds": load, "layers": weights.layers.count, "width": weights.width,
                                       "peak_rss_bytes": PeakMemory.residentBytes()]))
        } else {
            print(String(format: "lora embed on %@: %d layers → %d-d in %.3f s (best of %d), load %.3f s%@", backend.name,
                         weights.layers.count, weights.width, best, max(1, repeatCount), load, output.map { ", wrote \($0)" } ?? ""))
        }
    }
}

/// `lorafuse estlora plan`: what EST-LoRA will do with a content and a style LoRA over a run.
struct ESTLoRACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "estlora", abstract: "EST-LoRA: per-layer energy selection between a content and a style LoRA.",
        subcommands: [ESTLoRAPlanCommand.self])
}

struct ESTLoRAPlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Per layer E_c, E_s and the content steps; the layers that apply the content LoRA at every step (--json).")

    @OptionGroup var pair: PairPlanOptions

    @OptionGroup var estlora: ESTLoRASettings

    @Option(name: .long, parsing: .unconditional, help: "Sampling steps of the run the schedule covers.")
    var steps = 28

    @Flag(name: .long, help: "Do not read or write the plan cache ($LORAFUSE_CACHE/estlora or ~/.cache/lorafuse/estlora).")
    var noCache = false

    @Flag(name: .long, help: "Print one JSON object.")
    var json = false

    func validate() throws {
        let maxSteps = FluxTextToImage.Limits().maxSteps
        guard (1...maxSteps).contains(steps) else { throw ValidationError("--steps must be in 1...\(maxSteps), got \(steps)") }
    }

    func run() throws {
        let (backend, flux, contentFile, styleFile) = try pair.load()
        let start = DispatchTime.now().uptimeNanoseconds
        let plan = try ESTLoRAPlanner(backend: backend, cacheFolder: noCache ? nil : ESTLoRAPlanner.defaultCacheFolder)
            .plan(content: contentFile, style: styleFile, config: flux?.config)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let (alpha, beta, schedule) = try estlora.parameters()
        let chosen = (0..<steps).map { step in
            plan.layers.indices.map { plan.usesContent(layer: $0, step: step, steps: steps, alpha: alpha, beta: beta, schedule: schedule) }
        }
        if json {
            let layers: [[String: Any]] = plan.layers.enumerated().map { index, layer in
                ["name": layer.name, "content_energy": layer.contentEnergy, "style_energy": layer.styleEnergy,
                 "content_abs_sum": layer.contentAbsSum, "style_abs_sum": layer.styleAbsSum,
                 "content_steps": chosen.filter { $0[index] }.count]
            }
            let perStep = chosen.map { flags in plan.layers.indices.filter { flags[$0] }.map { plan.layers[$0].name } }
            print(try JSONOutput.line(["command": "estlora plan", "backend": backend.name, "device": backend.device.name,
                                       "seconds": seconds, "gamma": plan.gamma, "alpha": alpha, "beta": beta,
                                       "schedule": schedule.rawValue, "steps": steps, "layers": layers,
                                       "content_layers": perStep, "content_only": plan.contentOnly, "style_only": plan.styleOnly]))
            return
        }
        let width = max(5, plan.layers.map(\.name.count).max() ?? 0)
        print("layer".padding(toLength: width, withPad: " ", startingAt: 0) + "          E_c          E_s  content steps")
        for (index, layer) in plan.layers.enumerated() {
            print(layer.name.padding(toLength: width, withPad: " ", startingAt: 0)
                  + String(format: " %12.5g %12.5g %8d of %d", layer.contentEnergy, layer.styleEnergy, chosen.filter { $0[index] }.count, steps))
        }
        let shares = chosen.map { Double($0.filter { $0 }.count) / Double(max(plan.layers.count, 1)) }
        print(String(format: "γ = %.5g; %d fused, %d content-only and %d style-only layer(s); plan in %.3f s on %@",
                     plan.gamma, plan.layers.count, plan.contentOnly.count, plan.styleOnly.count, seconds, backend.name))
        print(String(format: "content share of fused layers (%@, α %.3g, β %.3g, %d steps): first step %.0f%%, middle %.0f%%, last %.0f%%",
                     schedule.rawValue, alpha, beta, steps, 100 * shares[0], 100 * shares[steps / 2], 100 * shares[steps - 1]))
    }
}
