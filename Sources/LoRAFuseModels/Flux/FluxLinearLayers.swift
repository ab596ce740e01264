import LoRAFuse
/// One Linear of the FLUX transformer under its diffusers name, with its widths: the
/// layers a LoRA may target.
public struct FluxLinearLayer: Sendable, Hashable {
    public let name: String
    public let inFeatures: Int
    public let outFeatures: Int
}

extension FluxConfig {
    /// Every Linear `FluxTransformer` builds, in graph order.
    public var linearLayers: [FluxLinearLayer] {
        let dim = innerDim, mlp = mlpHiddenDim, channels = FluxConfig.timestepChannels
        var layers: [FluxLinearLayer] = []
        func add(_ name: String, _ inFeatures: Int, _ outFeatures: Int) {
            layers.append(FluxLinearLayer(name: name, inFeatures: inFeatures, outFeatures: outFeatures))
        }
        add("time_text_embed.timestep_embedder.linear_1", channels, dim)
        add("time_text_embed.timestep_embedder.linear_2", dim, dim)
        if guidanceEmbeds {
            add("time_text_embed.guidance_embedder.linear_1", channels, dim)
            add("time_text_embed.guidance_embedder.linear_2", dim, dim)
        }
        add("time_text_embed.text_embedder.linear_1", pooledProjectionDim, dim)
        add("time_text_embed.text_embedder.linear_2", dim, dim)
        add("x_embedder", inChannels, dim)
        add("context_embedder", jointAttentionDim, dim)
        for index in 0..<layerCount {
            let block = "transformer_blocks.\(index)"
            add("\(block).norm1.linear", dim, 6 * dim)
            add("\(block).norm1_context.linear", dim, 6 * dim)
            for name in ["to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"] {
                add("\(block).attn.\(name)", dim, dim)
            }
            for stream in ["ff", "ff_context"] {
                add("\(block).\(stream).net.0.proj", dim, mlp)
                add("\(block).\(stream).net.2", mlp, dim)
            }
        }
        for index in 0..<singleLayerCount {
            let block = "single_transformer_blocks.\(index)"
            add("\(block).norm.linear", dim, 3 * dim)
            for name in ["to_q", "to_k", "to_v"] { add("\(block).attn.\(name)", dim, dim) }
            add("\(block).proj_mlp", dim, mlp)
            add("\(block).proj_out", dim + mlp, dim)
        }
        add("norm_out.linear", dim, 2 * dim)
        add("proj_out", dim, patchSize * patchSize * outChannels)
        return layers
    }
}

extension FluxConfig {
    /// Every Linear's diffusers name in the order diffusers' `FluxTransformer2DModel.forward`
    /// calls it: the image embedder, the time/guidance/pooled-text embedders, the context
    /// embedder, per double block the two modulations, q/k/v of each stream, the two output
    /// projections and the two MLPs, per single block the modulation, the MLP input before q/k/v,
    /// and the output projection, then the final modulation and projection. Methods that count
    /// calls as they happen (EST-LoRA's schedule) use this order; `linearLayers` lists the same
    /// names grouped by module.
    public var linearCallOrder: [String] {
        var names = ["x_embedder", "time_text_embed.timestep_embedder.linear_1", "time_text_embed.timestep_embedder.linear_2"]
        if guidanceEmbeds { names += ["time_text_embed.guidance_embedder.linear_1", "time_text_embed.guidance_embedder.linear_2"] }
        names += ["time_text_embed.text_embedder.linear_1", "time_text_embed.text_embedder.linear_2", "context_embedder"]
        for index in 0..<layerCount {
            let block = "transformer_blocks.\(index)"
            names += ["norm1.linear", "norm1_context.linear", "attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj",
                      "attn.add_k_proj", "attn.add_v_proj", "attn.to_out.0", "attn.to_add_out", "ff.net.0.proj", "ff.net.2",
                      "ff_context.net.0.proj", "ff_context.net.2"].map { "\(block).\($0)" }
        }
        for index in 0..<singleLayerCount {
            let block = "single_transformer_blocks.\(index)"
            names += ["norm.linear", "proj_mlp", "attn.to_q", "attn.to_k", "attn.to_v", "proj_out"].map { "\(block).\($0)" }
        }
        return names + ["norm_out.linear", "proj_out"]
    }
}
