import Foundation
import LoRAFuse

/// The inputs of one forward pass (docs/contracts.md), checked against the config,
/// plus what the host precomputes from them: sinusoidal timestep/guidance projections
/// and the rotary tables.
public struct FluxInputs: Sendable {
    public let batch: Int
    public let textLength: Int
    public let imageLength: Int
    /// Tensors bound to the graph's `.input` nodes.
    public let bindings: [String: HostTensor]

    /// Inputs read from named tensors (as `lorafuse dit --inputs` gives them), checked against `config`.
    public init(_ tensors: [String: HostTensor], config: FluxConfig) throws {
        func require(_ name: String, rank: Int) throws -> HostTensor {
            guard let tensor = tensors[name] else {
                throw ModelError.invalidInputs("missing '\(name)' (expected: hidden_states [B, L, \(config.inChannels)], encoder_hidden_states [B, T, \(config.jointAttentionDim)], pooled_projections [B, \(config.pooledProjectionDim)], timestep [B], \(config.guidanceEmbeds ? "guidance [B], " : "")img_ids [L, 3], txt_ids [T, 3])")
            }
            guard tensor.dtype.isFloatingPoint || tensor.dtype.isInteger else {
                throw ModelError.invalidInputs("'\(name)' is \(tensor.dtype.name); expected a floating-point (or integer) tensor")
            }
            guard tensor.shape.rank == rank else {
                throw ModelError.invalidInputs("'\(name)' has rank \(tensor.shape.rank) (shape \(tensor.shape)); expected rank \(rank)")
            }
            if let index = tensor.firstNonFiniteIndex() {
                throw ModelError.invalidInputs("'\(name)' holds a non-finite value (\(tensor.doubles()[index]) at flat index \(index))")
            }
            return tensor
        }
        let hidden = try require("hidden_states", rank: 3)
        let encoder = try require("encoder_hidden_states", rank: 3)
        let pooled = try require("pooled_projections", rank: 2)
        let timestep = try require("timestep", rank: 1)
        let imageIDs = try require("img_ids", rank: 2)
        let textIDs = try require("txt_ids", rank: 2)
        let batch = hidden.shape[0], imageLength = hidden.shape[1], textLength = encoder.shape[1]
        guard batch >= 1, imageLength >= 1 else {
            throw ModelError.invalidInputs("'hidden_states' has shape \(hidden.shape): the batch and the image length must be at least 1")
        }
        func check(_ tensor: HostTensor, _ name: String, _ expected: Shape) throws {
            guard tensor.shape == expected else {
                throw ModelError.invalidInputs("'\(name)' has shape \(tensor.shape), expected \(expected)")
            }
        }
        try check(hidden, "hidden_states", [batch, imageLength, config.inChannels])
        try check(encoder, "encoder_hidden_states", [batch, textLength, config.jointAttentionDim])
        try check(pooled, "pooled_projections", [batch, config.pooledProjectionDim])
        try check(timestep, "timestep", [batch])
        try check(imageIDs, "img_ids", [imageLength, config.axesDimsRope.count])
        try check(textIDs, "txt_ids", [textLength, config.axesDimsRope.count])
        var bindings: [String: HostTensor] = [
            "hidden_states": hidden.converted(to: .float32),
            "encoder_hidden_states": encoder.converted(to: .float32),
            "pooled_projections": pooled.converted(to: .float32),
            "timestep_projection": Self.timestepProjection(timestep.doubles()),
        ]
        if config.guidanceEmbeds {
            guard tensors["guidance"] != nil else {
                throw ModelError.invalidInputs("missing 'guidance' [\(batch)]: this model is guidance-distilled (FLUX.1-dev)")
            }
            let guidance = try require("guidance", rank: 1)
            try check(guidance, "guidance", [batch])
            bindings["guidance_projection"] = Self.timestepProjection(guidance.doubles())
        }
        let (cos, sin) = Self.rotaryTables(ids: textIDs.doubles() + imageIDs.doubles(), axes: config.axesDimsRope)
        bindings["rope_cos"] = cos
        bindings["rope_sin"] = sin
        self.batch = batch
        self.textLength = textLength
        self.imageLength = imageLength
        self.bindings = bindings
    }

    /// diffusers' `Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)` on t·1000,
    /// computed in float32 exactly as diffusers does even for float64 models: [cos | sin].
    static func timestepProjection(_ values: [Double]) -> HostTensor {
        let half = FluxConfig.timestepChannels / 2
        let logPeriod = Float(log(10000.0))
        let frequencies = (0..<half).map { Foundation.exp(-logPeriod * Float($0) / Float(half)) }
        var out: [Float] = []
        for value in values {
            let t = Float(value * 1000)
            let angles = frequencies.map { t * $0 }
            out += angles.map { Foundation.cos($0) } + angles.map { Foundation.sin($0) }
        }
        return HostTensor(shape: [values.count, 2 * half], floats: out)
    }

    /// FLUX's 3-axis rotary tables for the joint sequence (text ids, then image ids):
    /// for axis a of width dₐ, frequencies θ^(−2i/dₐ), angles in float64, tables in float32.
    static func rotaryTables(ids: [Double], axes: [Int], theta: Double = 10000) -> (HostTensor, HostTensor) {
        let length = ids.count / axes.count
        let half = axes.reduce(0, +) / 2
        var cos = [Float](), sin = [Float]()
        cos.reserveCapacity(length * half)
        sin.reserveCapacity(length * half)
        for position in 0..<length {
            for (axis, width) in axes.enumerated() {
                let coordinate = ids[position * axes.count + axis]
                for i in 0..<(width / 2) {
                    let angle = coordinate / pow(theta, Double(2 * i) / Double(width))
                    cos.append(Float(Foundation.cos(angle)))
                    sin.append(Float(Foundation.sin(angle)))
                }
            }
        }
        return (HostTensor(shape: [length, half], floats: cos), HostTensor(shape: [length, half], floats: sin))
    }
}
