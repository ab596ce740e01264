import Foundation
import LoRAFuse

/// FLUX weights addressed by diffusers names, whatever layout the checkpoint uses.
public protocol FluxWeights: Sendable {
    var description: String { get }
    /// The tensor diffusers calls `name`, checked against `shape`.
    func tensor(_ name: String, shape: Shape) throws -> HostTensor
    /// BFL stores the final AdaLN modulation as (shift, scale); diffusers as (scale, shift).
    var finalModulationShiftFirst: Bool { get }
    /// The scale of a scaled-fp8 weight `name` (diffusers naming): its value is the stored
    /// tensor × this. Nil for weights stored as they are.
    func weightScale(_ name: String) throws -> Float?
}

extension TensorSource: FluxWeights {
    public var finalModulationShiftFirst: Bool { false }
}

/// A Black Forest Labs checkpoint (`flux1-dev.safetensors` names, optionally under
/// `model.diffusion_model.`) seen through diffusers names. Fused projections — `qkv` and
/// the single blocks' `linear1` (q, k, v, MLP) — are served as row ranges of the fused
/// tensor: views into the mapping, never copies.
public struct BFLFluxWeights: FluxWeights {
    public let source: TensorSource
    public let prefix: String
    public let innerDim: Int
    public let mlpHiddenDim: Int

    public var description: String { source.description }
    public var finalModulationShiftFirst: Bool { true }

    /// The tensor `name` (diffusers naming), checked to have `shape`.
    public func tensor(_ name: String, shape: Shape) throws -> HostTensor {
        guard let (bflName, rows) = Self.map(name, innerDim: innerDim, mlpHiddenDim: mlpHiddenDim) else {
            throw ModelError.missingTensor(name: name, source: source.description + " (no BFL equivalent)")
        }
        guard let rows else { return try source.tensor(prefix + bflName, shape: shape) }
        let fused = try source.tensor(prefix + bflName)
        let rowWidth = fused.shape.rank == 2 ? fused.shape[1] : 1
        let expected = fused.shape.rank == 2 ? Shape([rows.count, rowWidth]) : Shape([rows.count])
        guard rows.upperBound <= fused.shape[0], expected == shape else {
            throw ModelError.shapeMismatch(name: prefix + bflName, expected: shape, actual: fused.shape, source: source.description)
        }
        guard DType.linearWeightTypes.contains(fused.dtype) else {
            throw ModelError.unsupportedDType(name: prefix + bflName, dtype: fused.dtype, source: source.description)
        }
        // Rows of a block-quantized matrix are whole blocks, so a row range is a byte range.
        return HostTensor(type: TensorType(shape, fused.dtype), storage: fused.storage,
                          byteOffset: fused.byteOffset + fused.dtype.byteCount(elements: rows.lowerBound * rowWidth))
    }

    /// The scale of the BFL tensor behind `name` (a fused tensor has one scale for all its parts).
    public func weightScale(_ name: String) throws -> Float? {
        guard let (bflName, _) = Self.map(name, innerDim: innerDim, mlpHiddenDim: mlpHiddenDim) else { return nil }
        return try source.weightScale(prefix + bflName)
    }

    /// diffusers name → (BFL name, rows of a fused tensor or nil for the whole tensor).
    static func map(_ name: String, innerDim d: Int, mlpHiddenDim: Int) -> (String, Range<Int>?)? {
        let parts = name.split(separator: ".").map(String.init)
        guard let kind = parts.last else { return nil }
        let module = parts.dropLast().joined(separator: ".")
        let direct: [String: String] = [
            "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
            "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
            "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
            "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
            "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
            "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
            "context_embedder": "txt_in", "x_embedder": "img_in",
            "proj_out": "final_layer.linear", "norm_out.linear": "final_layer.adaLN_modulation.1",
        ]
        if let mapped = direct[module] { return ("\(mapped).\(kind)", nil) }
        guard parts.count >= 3, let index = Int(parts[1]) else { return nil }
        let inner = parts[2..<(parts.count - 1)].joined(separator: ".")
        let third = { (slot: Int) in slot * d..<(slot + 1) * d }
        if parts[0] == "transformer_blocks" {
            let block = "double_blocks.\(index)"
            let table: [String: (String, Range<Int>?)] = [
                "norm1.linear": ("img_mod.lin", nil), "norm1_context.linear": ("txt_mod.lin", nil),
                "attn.to_q": ("img_attn.qkv", third(0)), "attn.to_k": ("img_attn.qkv", third(1)), "attn.to_v": ("img_attn.qkv", third(2)),
                "attn.add_q_proj": ("txt_attn.qkv", third(0)), "attn.add_k_proj": ("txt_attn.qkv", third(1)),
                "attn.add_v_proj": ("txt_attn.qkv", third(2)),
                "attn.to_out.0": ("img_attn.proj", nil), "attn.to_add_out": ("txt_attn.proj", nil),
                "ff.net.0.proj": ("img_mlp.0", nil), "ff.net.2": ("img_mlp.2", nil),
                "ff_context.net.0.proj": ("txt_mlp.0", nil), "ff_context.net.2": ("txt_mlp.2", nil),
            ]
            let norms: [String: String] = [
                "attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
                "attn.norm_added_q": "txt_attn.norm.query_norm", "attn.norm_added_k": "txt_attn.norm.key_norm",
            ]
            if let norm = norms[inner], kind == "weight" { return ("\(block).\(norm).scale", nil) }
            if let (target, rows) = table[inner] { return ("\(block).\(target).\(kind)", rows) }
        } else if parts[0] == "single_transformer_blocks" {
            let block = "single_blocks.\(index)"
            let table: [String: (String, Range<Int>?)] = [
                "norm.linear": ("modulation.lin", nil),
                "attn.to_q": ("linear1", third(0)), "attn.to_k": ("linear1", third(1)), "attn.to_v": ("linear1", third(2)),
                "proj_mlp": ("linear1", 3 * d..<(3 * d + mlpHiddenDim)), "proj_out": ("linear2", nil),
            ]
            let norms = ["attn.norm_q": "norm.query_norm", "attn.norm_k": "norm.key_norm"]
            if let norm = norms[inner], kind == "weight" { return ("\(block).\(norm).scale", nil) }
            if let (target, rows) = table[inner] { return ("\(block).\(target).\(kind)", rows) }
        }
        return nil
    }

    /// Reads a BFL checkpoint and infers its config from tensor shapes. The rope axes are not
    /// visible in shapes: they come from `given` (a diffusers config, whose every other value
    /// must agree with the shapes), else the file's `axes_dims_rope` metadata, else FLUX.1's
    /// (16, 56, 56) for 128-wide heads.
    public static func load(file: SafeTensorsFile, config given: (config: FluxConfig, file: String)? = nil) throws -> (FluxConfig, BFLFluxWeights) {
        try load(source: TensorSource(files: [file], description: file.path), metadata: file.metadata, path: file.path, config: given)
    }

    /// A BFL-named GGUF transformer (city96's and stable-diffusion.cpp's FLUX files); the rope
    /// axes from an `axes_dims_rope` string in its metadata where present.
    public static func load(gguf: GGUFFile, config given: (config: FluxConfig, file: String)? = nil) throws -> (FluxConfig, BFLFluxWeights) {
        let source = TensorSource(gguf: gguf)
        let metadata = gguf.metadata.reduce(into: [String: String]()) { result, entry in
            if case let .string(text) = entry.value { result[entry.key] = text }
        }
        return try load(source: source, metadata: metadata, path: gguf.path, config: given)
    }

    static func load(source: TensorSource, metadata: [String: String], path: String,
                     config given: (config: FluxConfig, file: String)?) throws -> (FluxConfig, BFLFluxWeights) {
        let file = (path: path, metadata: metadata)
        let prefix = source.contains("model.diffusion_model.img_in.weight") ? "model.diffusion_model." : ""
        func shape(_ name: String) throws -> Shape {
            guard source.contains(prefix + name) else { throw ModelError.missingTensor(name: prefix + name, source: file.path) }
            return try source.shape(prefix + name)
        }
        guard source.contains(prefix + "img_in.weight") else {
            throw ModelError.notAModel(path: file.path, reason: "no img_in.weight (not a BFL FLUX checkpoint)")
        }
        var config = FluxConfig()
        let imageIn = try shape("img_in.weight")
        config.inChannels = imageIn[1]
        let inner = imageIn[0]
        config.jointAttentionDim = try shape("txt_in.weight")[1]
        config.pooledProjectionDim = try shape("vector_in.in_layer.weight")[1]
        config.guidanceEmbeds = source.contains(prefix + "guidance_in.in_layer.weight")
        func count(_ block: String) -> Int {
            Set(source.names.compactMap { name -> Int? in
                guard name.hasPrefix(prefix + block + ".") else { return nil }
                return Int(name.dropFirst(prefix.count + block.count + 1).split(separator: ".").first ?? "")
            }).count
        }
        config.layerCount = count("double_blocks")
        config.singleLayerCount = count("single_blocks")
        let normName = config.layerCount > 0 ? "double_blocks.0.img_attn.norm.query_norm.scale" : "single_blocks.0.norm.query_norm.scale"
        config.attentionHeadDim = try shape(normName)[0]
        guard config.attentionHeadDim > 0, inner % config.attentionHeadDim == 0 else {
            throw ModelError.notAModel(path: file.path, reason: "width \(inner) is not a multiple of the head dim \(config.attentionHeadDim)")
        }
        config.attentionHeadCount = inner / config.attentionHeadDim
        if let (stated, configFile) = given {
            let observed = FluxConfig.Observed(config: config, evidence: [
                "in_channels": "img_in.weight has \(config.inChannels) inputs",
                "num_layers": "the file has \(config.layerCount) double blocks",
                "num_single_layers": "the file has \(config.singleLayerCount) single blocks",
                "attention_head_dim": "the query norm is \(config.attentionHeadDim) wide",
                "num_attention_heads": "img_in.weight is \(inner) wide, \(config.attentionHeadCount) heads of \(config.attentionHeadDim)",
                "joint_attention_dim": "txt_in.weight has \(config.jointAttentionDim) inputs",
                "pooled_projection_dim": "vector_in.in_layer.weight has \(config.pooledProjectionDim) inputs",
                "guidance_embeds": config.guidanceEmbeds ? "the file has guidance_in" : "the file has no guidance_in",
            ])
            try observed.check(stated, configFile: configFile, weights: file.path)
            config.axesDimsRope = stated.axesDimsRope
        } else if let axes = file.metadata["axes_dims_rope"] {
            let parts = axes.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard parts.count <= 64, parts.allSatisfy({ $0 != nil }) else {
                throw ModelError.notAModel(path: file.path, reason: "metadata axes_dims_rope \(jsonQuoted(String(axes.prefix(80)))) is not a list of integers like \"16,56,56\"")
            }
            config.axesDimsRope = parts.map { $0! }
        } else if config.attentionHeadDim == 128 {
            config.axesDimsRope = [16, 56, 56]
        } else {
            throw ModelError.notAModel(path: file.path, reason:
                "cannot infer axes_dims_rope for head dim \(config.attentionHeadDim); give the transformer's config.json with --config " +
                "(diffusers' transformer/config.json), or add `axes_dims_rope` metadata (e.g. \"16,56,56\")")
        }
        try config.validate(source: file.path)
        let weights = BFLFluxWeights(source: source, prefix: prefix, innerDim: inner, mlpHiddenDim: config.mlpHiddenDim)
        return (config, weights)
    }
}
