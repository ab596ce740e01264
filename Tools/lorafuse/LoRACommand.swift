import ArgumentParser
import Foundation
import LoRAFuse

/// `--lora FILE[:SCALE]…`, `--merge`, `--allow-unmatched-lora-keys`, shared by the commands
/// that run the transformer.
struct LoRAOptions: ParsableArguments {
    @Option(name: .customLong("lora"), help: "A LoRA file with an optional scale, FILE[:SCALE] (default 1); repeat for several.")
    var loras: [String] = []

    @Flag(name: .long, help: "Merge the LoRAs into the weights on the backend (W + Σ s·α/r·B·A) instead of applying them hot.")
    var merge = false

    @Flag(name: .customLong("allow-unmatched-lora-keys"), help: "Warn about LoRA keys that match no layer instead of failing.")
    var allowUnmatchedLoRAKeys = false

    func adapters(for model: FluxModel) throws -> [LoRAAdapter] {
        try loras.map { argument in
            let (path, scale) = LoRAAdapter.parseArgument(argument)
            let file = try LoRAFile.load(path: path, model: model, allowUnmatchedKeys: allowUnmatchedLoRAKeys)
            if !file.unmatchedKeys.isEmpty {
                FileHandle.standardError.write(Data("warning: \(path): ignoring \(file.unmatchedKeys.count) key(s) that match no layer: \(file.unmatchedKeys.prefix(8).joined(separator: ", "))\(file.unmatchedKeys.count > 8 ? ", …" : "")\n".utf8))
            }
            return LoRAAdapter(file: file, scale: scale)
        }
    }

    /// The transformer with the LoRAs applied hot, or merged on `backend` (with the seconds it took).
    func transformer(_ model: FluxModel, backend: any Backend) throws -> (FluxTransformer, mergeSeconds: Double?) {
        let adapters = try adapters(for: model)
        guard merge, !adapters.isEmpty else { return (FluxTransformer(model: model, adapters: adapters), nil) }
        let start = DispatchTime.now().uptimeNanoseconds
        let merged = try model.merging(adapters, on: backend)
        return (FluxTransformer(model: merged), Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
}

struct LoRACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora", abstract: "Look inside LoRA files.", subcommands: [LoRAInspectCommand.self])
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

    @Flag(name: .long, help: "Print one JSON object.")
    var json = false

    func run() throws {
        let flux = try model.map { try FluxModel.load(path: $0) }
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
                                       "alpha_source": lora.alphaSource, "modules": modules, "layers": lora.modules.count,
                                       "unmatched_keys": lora.unmatchedKeys]))
            return
        }
        let ranks = Set(lora.modules.map(\.rank)).sorted().map(String.init).joined(separator: ", ")
        print("\(file): \(lora.format.rawValue) LoRA, \(sources.count) module(s) on \(lora.modules.count) layer(s), rank \(ranks), alpha from \(lora.alphaSource)")
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
