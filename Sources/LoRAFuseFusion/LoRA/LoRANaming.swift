import LoRAFuse
import LoRAFuseModels
/// How LoRA files name FLUX layers, and how those names map to the diffusers Linears the
/// graph builds. A module may cover several Linears (BFL's fused `qkv` and single-block
/// `linear1`): each part takes a row range of the module's up factor B, and all share its
/// down factor A — ΔW_part = B[rows]·A, exactly the fused ΔW restricted to that Linear.
public enum LoRANaming {
    /// Rows of a module's B that feed one Linear: all, the i-th of the first three
    /// `inFeatures`-high blocks (q, k, v), or the rows after them (single-block MLP).
    public enum Slot: Sendable, Hashable {
        case whole
        case third(Int)
        case rest

        /// The row range for a B with `rows` rows and an A reading `inFeatures` columns.
        func rows(total rows: Int, inFeatures: Int) -> Range<Int>? {
            switch self {
            case .whole: return 0..<rows
            case let .third(index):
                let range = index * inFeatures..<(index + 1) * inFeatures
                return range.upperBound <= rows ? range : nil
            case .rest: return 3 * inFeatures < rows ? 3 * inFeatures..<rows : nil
            }
        }
    }

    /// One Linear a LoRA module writes to, and which rows of a fused layer it is.
    public struct Part: Sendable, Hashable {
        public let layer: String
        public let slot: Slot
    }

    /// Where a module name points: its naming family, its parts, and whether its rows are
    /// BFL's final modulation order (shift, scale) rather than diffusers' (scale, shift).
    public struct Target: Sendable, Hashable {
        public let family: LoRAFormat
        public let parts: [Part]
        public var shiftFirstModulation = false
    }

    // Block-local names, dotted, each with the diffusers Linears they cover.
    static func thirds(_ names: [String]) -> [Part] { names.enumerated().map { Part(layer: $0.element, slot: .third($0.offset)) } }
    static let diffusersDouble = ["norm1.linear", "norm1_context.linear", "attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj",
                                  "attn.add_k_proj", "attn.add_v_proj", "attn.to_out.0", "attn.to_add_out", "ff.net.0.proj",
                                  "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"]
    static let diffusersSingle = ["norm.linear", "attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out"]
    static let diffusersGlobal = ["time_text_embed.timestep_embedder.linear_1", "time_text_embed.timestep_embedder.linear_2",
                                  "time_text_embed.guidance_embedder.linear_1", "time_text_embed.guidance_embedder.linear_2",
                                  "time_text_embed.text_embedder.linear_1", "time_text_embed.text_embedder.linear_2",
                                  "x_embedder", "context_embedder", "norm_out.linear", "proj_out"]
    static let imageQKV = thirds(["attn.to_q", "attn.to_k", "attn.to_v"])
    static let textQKV = thirds(["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"])
    static let singleQKVMLP = thirds(["attn.to_q", "attn.to_k", "attn.to_v"]) + [Part(layer: "proj_mlp", slot: .rest)]
    static func whole(_ name: String) -> [Part] { [Part(layer: name, slot: .whole)] }

    static let bflDouble: [String: [Part]] = [
        "img_mod.lin": whole("norm1.linear"), "txt_mod.lin": whole("norm1_context.linear"),
        "img_attn.qkv": imageQKV, "txt_attn.qkv": textQKV,
        "img_attn.proj": whole("attn.to_out.0"), "txt_attn.proj": whole("attn.to_add_out"),
        "img_mlp.0": whole("ff.net.0.proj"), "img_mlp.2": whole("ff.net.2"),
        "txt_mlp.0": whole("ff_context.net.0.proj"), "txt_mlp.2": whole("ff_context.net.2"),
    ]
    static let bflSingle: [String: [Part]] = [
        "linear1": singleQKVMLP, "linear2": whole("proj_out"), "modulation.lin": whole("norm.linear"),
    ]
    static let bflGlobal: [String: String] = [
        "img_in": "x_embedder", "txt_in": "context_embedder",
        "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1", "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
        "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
        "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
        "vector_in.in_layer": "time_text_embed.text_embedder.linear_1", "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
        "final_layer.linear": "proj_out", "final_layer.adaLN_modulation.1": "norm_out.linear",
    ]
    /// DiffSynth-Studio's FLUX DiT (`blocks.N`, `single_blocks.N`, fused qkv and qkv+MLP).
    static let diffSynthDouble: [String: [Part]] = [
        "norm1_a.linear": whole("norm1.linear"), "norm1_b.linear": whole("norm1_context.linear"),
        "attn.a_to_qkv": imageQKV, "attn.b_to_qkv": textQKV,
        "attn.a_to_out": whole("attn.to_out.0"), "attn.b_to_out": whole("attn.to_add_out"),
        "ff_a.0": whole("ff.net.0.proj"), "ff_a.2": whole("ff.net.2"), "ff_b.0": whole("ff_context.net.0.proj"),
        "ff_b.2": whole("ff_context.net.2"),
    ]
    static let diffSynthSingle: [String: [Part]] = [
        "to_qkv_mlp": singleQKVMLP, "proj_out": whole("proj_out"), "norm.linear": whole("norm.linear"),
    ]
    static let diffSynthGlobal: [String: String] = ["x_embedder": "x_embedder", "context_embedder": "context_embedder",
                                                    "final_proj_out": "proj_out"]
    /// XLabs' attention processors (`double_blocks.N.processor.qkv_lora1` = image stream).
    static let xlabsDouble: [String: [Part]] = [
        "processor.qkv_lora1": imageQKV, "processor.qkv_lora2": textQKV,
        "processor.proj_lora1": whole("attn.to_out.0"), "processor.proj_lora2": whole("attn.to_add_out"),
    ]
    static let xlabsSingle: [String: [Part]] = [
        "processor.qkv_lora": imageQKV, "processor.qkv_lora1": imageQKV,
        "processor.proj_lora": whole("proj_out"), "processor.proj_lora1": whole("proj_out"),
    ]

    /// Prefixes trainers put before the module path.
    static let prefixes = ["base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.", "unet.", "dit."]

    /// The target of a module path (the key without its `.lora_A.weight`-style suffix), or nil.
    public static func target(of module: String) -> Target? {
        if let rest = module.dropPrefix("lora_unet_") ?? module.dropPrefix("lora_transformer_") {
            return kohyaTarget(rest)
        }
        var path = module
        while let prefix = prefixes.first(where: { path.hasPrefix($0) }) { path = String(path.dropFirst(prefix.count)) }
        return dottedTarget(path)
    }

    static func dottedTarget(_ path: String) -> Target? {
        let parts = path.split(separator: ".", maxSplits: 2).map(String.init)
        if parts.count == 3, let index = Int(parts[1]) {
            let tail = parts[2]
            func inBlock(_ block: String, _ found: [Part]?, _ family: LoRAFormat) -> Target? {
                found.map { Target(family: family, parts: $0.map { Part(layer: "\(block).\(index).\($0.layer)", slot: $0.slot) }) }
            }
            switch parts[0] {
            case "transformer_blocks":
                return inBlock("transformer_blocks", diffusersDouble.contains(tail) ? whole(tail) : nil, .peft)
            case "single_transformer_blocks":
                return inBlock("single_transformer_blocks", diffusersSingle.contains(tail) ? whole(tail) : nil, .peft)
            case "double_blocks":
                return inBlock("transformer_blocks", bflDouble[tail], .bfl) ?? inBlock("transformer_blocks", xlabsDouble[tail], .xlabs)
            case "single_blocks":
                return inBlock("single_transformer_blocks", bflSingle[tail], .bfl)
                    ?? inBlock("single_transformer_blocks", diffSynthSingle[tail], .diffSynth)
                    ?? inBlock("single_transformer_blocks", xlabsSingle[tail], .xlabs)
            case "blocks":
                return inBlock("transformer_blocks", diffSynthDouble[tail], .diffSynth)
            default:
                break
            }
        }
        if diffusersGlobal.contains(path) { return Target(family: .peft, parts: whole(path)) }
        if let layer = bflGlobal[path] {
            return Target(family: .bfl, parts: whole(layer), shiftFirstModulation: layer == "norm_out.linear")
        }
        if let layer = diffSynthGlobal[path] { return Target(family: .diffSynth, parts: whole(layer)) }
        return nil
    }

    /// kohya / sd-scripts names: the BFL (or diffusers) module path with every '.' as '_'.
    static func kohyaTarget(_ name: String) -> Target? {
        func underscored(_ table: [String]) -> [String: String] {
            Dictionary(table.map { ($0.replacingOccurrences(of: ".", with: "_"), $0) }, uniquingKeysWith: { first, _ in first })
        }
        for (block, tails) in [("double_blocks", Array(bflDouble.keys)), ("single_blocks", Array(bflSingle.keys)),
                               ("transformer_blocks", diffusersDouble), ("single_transformer_blocks", diffusersSingle)] {
            guard let rest = name.dropPrefix(block + "_") else { continue }
            let pieces = rest.split(separator: "_", maxSplits: 1).map(String.init)
            guard pieces.count == 2, let index = Int(pieces[0]), let tail = underscored(tails)[pieces[1]] else { return nil }
            return dottedTarget("\(block).\(index).\(tail)").map { Target(family: .kohya, parts: $0.parts) }
        }
        let globals = underscored(Array(bflGlobal.keys) + diffusersGlobal)
        guard let dotted = globals[name] else { return nil }
        return dottedTarget(dotted).map { Target(family: .kohya, parts: $0.parts, shiftFirstModulation: $0.shiftFirstModulation) }
    }
}

extension String {
    func dropPrefix(_ prefix: String) -> String? { hasPrefix(prefix) ? String(dropFirst(prefix.count)) : nil }
}
