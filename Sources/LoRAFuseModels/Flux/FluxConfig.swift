import Foundation
import LoRAFuse

/// A FLUX.1 transformer's shape, as diffusers' `FluxTransformer2DModel` config names it.
public struct FluxConfig: Sendable, Hashable {
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

    /// diffusers' config keys (read by `init(json:source:)`).
    enum CodingKeys: String {
        case patchSize = "patch_size", inChannels = "in_channels", layerCount = "num_layers"
        case singleLayerCount = "num_single_layers", attentionHeadDim = "attention_head_dim"
        case attentionHeadCount = "num_attention_heads", jointAttentionDim = "joint_attention_dim"
        case pooledProjectionDim = "pooled_projection_dim", guidanceEmbeds = "guidance_embeds", axesDimsRope = "axes_dims_rope"
    }

    public init() {}

    /// Width of the residual stream: heads × head dim.
    public var innerDim: Int { attentionHeadCount * attentionHeadDim }
    /// FLUX's MLPs are 4× wide.
    public var mlpHiddenDim: Int { innerDim * 4 }
    public var outChannels: Int { inChannels }
    /// Channels of the sinusoidal timestep/guidance projection.
    public static let timestepChannels = 256

    /// Bounds far past any FLUX-family model (FLUX.1: 19 + 38 blocks, 24 heads of 128), so
    /// that every size derived from the config is computed without overflow.
    public static let maximumLayers = 1000
    public static let maximumWidth = 1 << 16
    public static let maximumHeads = 1024

    /// Checks the numbers fit together (rope axes cover the head, all positive) and lie
    /// within the bounds above.
    public func validate(source: String) throws(ModelError) {
        let widths = [("in_channels", inChannels), ("attention_head_dim", attentionHeadDim), ("joint_attention_dim", jointAttentionDim),
                      ("pooled_projection_dim", pooledProjectionDim)]
        for (key, value) in widths where !(1...Self.maximumWidth).contains(value) {
            throw ModelError.notAModel(path: source, reason: "\(key) is \(value); expected 1...\(Self.maximumWidth)")
        }
        guard (1...Self.maximumHeads).contains(attentionHeadCount) else {
            throw ModelError.notAModel(path: source, reason: "num_attention_heads is \(attentionHeadCount); expected 1...\(Self.maximumHeads)")
        }
        guard innerDim <= Self.maximumWidth else {
            throw ModelError.notAModel(path: source, reason:
                "num_attention_heads × attention_head_dim = \(innerDim) is wider than \(Self.maximumWidth)")
        }
        for (key, value) in [("num_layers", layerCount), ("num_single_layers", singleLayerCount)] where !(0...Self.maximumLayers).contains(value) {
            throw ModelError.notAModel(path: source, reason: "\(key) is \(value); expected 0...\(Self.maximumLayers)")
        }
        guard patchSize == 1 else {
            throw ModelError.notAModel(path: source, reason: "patch_size \(patchSize) is not supported (FLUX packs 2×2 latents outside the transformer; patch_size is 1)")
        }
        guard (1...8).contains(axesDimsRope.count), axesDimsRope.allSatisfy({ (1...attentionHeadDim).contains($0) && $0 % 2 == 0 }),
              axesDimsRope.reduce(0, +) == attentionHeadDim else {
            throw ModelError.notAModel(path: source, reason:
                "axes_dims_rope \(axesDimsRope) must be 1 to 8 even widths that sum to attention_head_dim \(attentionHeadDim)")
        }
    }

    /// A diffusers config object, strictly: each key present has the JSON type diffusers
    /// needs (an integer, a boolean, a list of integers), else one error naming the key;
    /// absent keys take `FluxTransformer2DModel`'s defaults.
    public init(json: JSONValue, source: String) throws(ModelError) {
        guard case .object = json else { throw ModelError.notAModel(path: source, reason: "the config is not a JSON object") }
        func fail(_ key: CodingKeys, _ expected: String, _ value: JSONValue) -> ModelError {
            ModelError.notAModel(path: source, reason: "'\(key.rawValue)' must be \(expected), got \(value.kindName)\(value.literal.map { " \($0)" } ?? "")")
        }
        func integer(_ key: CodingKeys, _ fallback: Int) throws(ModelError) -> Int {
            guard let value = json[member: key.rawValue] else { return fallback }
            guard case let .number(text) = value, let number = Int(text) else { throw fail(key, "an integer", value) }
            return number
        }
        self.init()
        patchSize = try integer(.patchSize, patchSize)
        inChannels = try integer(.inChannels, inChannels)
        layerCount = try integer(.layerCount, layerCount)
        singleLayerCount = try integer(.singleLayerCount, singleLayerCount)
        attentionHeadDim = try integer(.attentionHeadDim, attentionHeadDim)
        attentionHeadCount = try integer(.attentionHeadCount, attentionHeadCount)
        jointAttentionDim = try integer(.jointAttentionDim, jointAttentionDim)
        pooledProjectionDim = try integer(.pooledProjectionDim, pooledProjectionDim)
        if let value = json[member: CodingKeys.guidanceEmbeds.rawValue] {
            guard case let .bool(flag) = value else { throw fail(.guidanceEmbeds, "true or false", value) }
            guidanceEmbeds = flag
        }
        if let value = json[member: CodingKeys.axesDimsRope.rawValue] {
            guard case let .array(items) = value, items.count <= 64 else { throw fail(.axesDimsRope, "a list of integers", value) }
            var axes: [Int] = []
            for item in items {
                guard case let .number(text) = item, let number = Int(text) else { throw fail(.axesDimsRope, "a list of integers", value) }
                axes.append(number)
            }
            axesDimsRope = axes
        }
    }

    /// What a checkpoint's tensors show about its config, each value with the sentence that
    /// says which tensor shows it: a config must agree with all of it.
    public struct Observed: Sendable {
        public var config: FluxConfig
        /// Config key → e.g. "img_in.weight has 64 inputs".
        public var evidence: [String: String]

        /// One error listing every value of `stated` the weights contradict.
        public func check(_ stated: FluxConfig, configFile: String, weights: String) throws(ModelError) {
            let pairs: [(CodingKeys, String, String)] = [
                (.inChannels, "\(stated.inChannels)", "\(config.inChannels)"),
                (.layerCount, "\(stated.layerCount)", "\(config.layerCount)"),
                (.singleLayerCount, "\(stated.singleLayerCount)", "\(config.singleLayerCount)"),
                (.attentionHeadDim, "\(stated.attentionHeadDim)", "\(config.attentionHeadDim)"),
                (.attentionHeadCount, "\(stated.attentionHeadCount)", "\(config.attentionHeadCount)"),
                (.jointAttentionDim, "\(stated.jointAttentionDim)", "\(config.jointAttentionDim)"),
                (.pooledProjectionDim, "\(stated.pooledProjectionDim)", "\(config.pooledProjectionDim)"),
                (.guidanceEmbeds, "\(stated.guidanceEmbeds)", "\(config.guidanceEmbeds)"),
            ]
            let contradictions = pairs.filter { $0.1 != $0.2 }.map { key, value, _ in
                "\(key.rawValue) is \(value) but \(evidence[key.rawValue] ?? "the weights differ")"
            }
            guard contradictions.isEmpty else {
                throw ModelError.notAModel(path: configFile, reason: "contradicts the weights of \(weights): \(contradictions.joined(separator: "; "))")
            }
        }
    }
}
