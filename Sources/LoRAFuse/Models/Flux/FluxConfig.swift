import Foundation

/// A FLUX.1 transformer's shape, as diffusers' `FluxTransformer2DModel` config names it.
public struct FluxConfig: Sendable, Hashable, Codable {
    public var patchSize: Int = 1
    public var inChannels: Int = 64
    public var layerCount: Int = 19
    public var singleLayerCount: Int = 38
    public var attentionHeadDim: Int = 128
    public var attentionHeadCount: Int = 24
    public var jointAttentionDim: Int = 4096
    public var pooledProjectionDim: Int = 768
    public var guidanceEmbeds: Bool = false
    public var axesDimsRope: [Int] = [16, 56, 56]

    enum CodingKeys: String, CodingKey {
        case patchSize = "patch_size", inChannels = "in_channels", layerCount = "num_layers"
        case singleLayerCount = "num_single_layers", attentionHeadDim = "attention_head_dim"
        case attentionHeadCount = "num_attention_heads", jointAttentionDim = "joint_attention_dim"
        case pooledProjectionDim = "pooled_projection_dim", guidanceEmbeds = "guidance_embeds", axesDimsRope = "axes_dims_rope"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = FluxConfig()
        patchSize = try container.decodeIfPresent(Int.self, forKey: .patchSize) ?? defaults.patchSize
        inChannels = try container.decodeIfPresent(Int.self, forKey: .inChannels) ?? defaults.inChannels
        layerCount = try container.decodeIfPresent(Int.self, forKey: .layerCount) ?? defaults.layerCount
        singleLayerCount = try container.decodeIfPresent(Int.self, forKey: .singleLayerCount) ?? defaults.singleLayerCount
        attentionHeadDim = try container.decodeIfPresent(Int.self, forKey: .attentionHeadDim) ?? defaults.attentionHeadDim
        attentionHeadCount = try container.decodeIfPresent(Int.self, forKey: .attentionHeadCount) ?? defaults.attentionHeadCount
        jointAttentionDim = try container.decodeIfPresent(Int.self, forKey: .jointAttentionDim) ?? defaults.jointAttentionDim
        pooledProjectionDim = try container.decodeIfPresent(Int.self, forKey: .pooledProjectionDim) ?? defaults.pooledProjectionDim
        guidanceEmbeds = try container.decodeIfPresent(Bool.self, forKey: .guidanceEmbeds) ?? defaults.guidanceEmbeds
        axesDimsRope = try container.decodeIfPresent([Int].self, forKey: .axesDimsRope) ?? defaults.axesDimsRope
    }

    /// Width of the residual stream: heads × head dim.
    public var innerDim: Int { attentionHeadCount * attentionHeadDim }
    /// FLUX's MLPs are 4× wide.
    public var mlpHiddenDim: Int { innerDim * 4 }
    public var outChannels: Int { inChannels }
    /// Channels of the sinusoidal timestep/guidance projection.
    public static let timestepChannels = 256

    /// Checks the numbers fit together (rope axes cover the head, all positive).
    public func validate(source: String) throws {
        let sizes = [patchSize, inChannels, attentionHeadDim, attentionHeadCount, jointAttentionDim, pooledProjectionDim]
        guard sizes.allSatisfy({ $0 > 0 }), layerCount >= 0, singleLayerCount >= 0 else {
            throw ModelError.notAModel(path: source, reason: "config has a non-positive size")
        }
        guard axesDimsRope.reduce(0, +) == attentionHeadDim, axesDimsRope.allSatisfy({ $0 > 0 && $0 % 2 == 0 }) else {
            throw ModelError.notAModel(path: source, reason:
                "axes_dims_rope \(axesDimsRope) must be even and sum to attention_head_dim \(attentionHeadDim)")
        }
        guard patchSize == 1 else {
            throw ModelError.notAModel(path: source, reason: "patch_size \(patchSize) is not supported (FLUX packs 2×2 latents outside the transformer; patch_size is 1)")
        }
    }
}
