import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion

/// diffusers' `FlowMatchEulerDiscreteScheduler` config (`scheduler/scheduler_config.json`);
/// the defaults are FLUX.1's.
public struct FlowMatchSchedulerConfig: Sendable, Equatable {
    public var baseImageSequenceLength = 256
    public var maxImageSequenceLength = 4096
    public var baseShift = 0.5
    public var maxShift = 1.15
    public var shift = 3.0
    public var dynamicShifting = true
    public var trainTimesteps = 1000

    public init() {}

    /// Reads `scheduler_config.json`; absent keys keep FLUX's values.
    public init(file: URL) throws {
        let data = try InputFile.read(file.path) { ModelError.notAModel(path: file.path, reason: "cannot read the scheduler config: \($0)") }
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw ModelError.notAModel(path: file.path, reason: "cannot read the scheduler config")
        }
        if let name = object["_class_name"] as? String, name != "FlowMatchEulerDiscreteScheduler" {
            throw ModelError.notAModel(path: file.path, reason: "scheduler \(name) is not supported (FlowMatchEulerDiscreteScheduler)")
        }
        baseImageSequenceLength = object["base_image_seq_len"] as? Int ?? baseImageSequenceLength
        maxImageSequenceLength = object["max_image_seq_len"] as? Int ?? maxImageSequenceLength
        baseShift = (object["base_shift"] as? NSNumber)?.doubleValue ?? baseShift
        maxShift = (object["max_shift"] as? NSNumber)?.doubleValue ?? maxShift
        shift = (object["shift"] as? NSNumber)?.doubleValue ?? shift
        dynamicShifting = object["use_dynamic_shifting"] as? Bool ?? dynamicShifting
        trainTimesteps = object["num_train_timesteps"] as? Int ?? trainTimesteps
    }
}

/// FLUX's flow-matching Euler sampler: σ from 1 towards 0, x ← x + (σ_next − σ)·v.
public struct FlowMatchSchedule: Sendable {
    /// The timestep schedule: diffusers' resolution-dependent shift, or DiffSynth's fixed shift 3.
    public enum Kind: String, Sendable, CaseIterable {
        /// diffusers' FluxPipeline: σ = linspace(1, 1/N, N), shifted by
        /// e^μ / (e^μ + 1/σ − 1) with μ linear in the image sequence length
        /// (`base_shift` at `base_image_seq_len` … `max_shift` at `max_image_seq_len`).
        case diffusers
        /// DiffSynth-Studio: σ = linspace(1, 0.003/1.002, N), then 3σ / (1 + 2σ).
        case diffsynth
    }

    /// N + 1 values, float32 as the schedulers keep them, the last 0.
    public let sigmas: [Float]

    public var steps: Int { sigmas.count - 1 }

    /// The timestep the transformer sees at step `index`: diffusers' t = σ·1000 (float32),
    /// divided by 1000.
    public func modelTimestep(_ index: Int) -> Double { Double(sigmas[index] * 1000) / 1000 }

    /// The `steps` sigmas for an image of `imageSequenceLength` latent tokens.
    public init(kind: Kind, steps: Int, imageSequenceLength: Int, config: FlowMatchSchedulerConfig = FlowMatchSchedulerConfig()) {
        var sigmas: [Double]
        switch kind {
        case .diffusers:
            sigmas = Self.linspace(1, 1 / Double(steps), steps)
            if config.dynamicShifting {
                let slope = (config.maxShift - config.baseShift) / Double(config.maxImageSequenceLength - config.baseImageSequenceLength)
                let mu = Double(imageSequenceLength) * slope + config.baseShift - slope * Double(config.baseImageSequenceLength)
                sigmas = sigmas.map { exp(mu) / (exp(mu) + (1 / $0 - 1)) }
            } else {
                sigmas = sigmas.map { config.shift * $0 / (1 + (config.shift - 1) * $0) }
            }
        case .diffsynth:
            sigmas = Self.linspace(1, 0.003 / 1.002, steps).map { 3 * $0 / (1 + 2 * $0) }
        }
        self.sigmas = sigmas.map(Float.init) + [0]
    }

    /// numpy's `linspace(start, stop, count)`: start + i·step, the last exactly `stop`.
    static func linspace(_ start: Double, _ stop: Double, _ count: Int) -> [Double] {
        guard count > 1 else { return count == 1 ? [start] : [] }
        let step = (stop - start) / Double(count - 1)
        return (0..<count).map { $0 == count - 1 ? stop : start + Double($0) * step }
    }

    /// One Euler step in place: x ← x + (σ_{i+1} − σ_i)·v.
    public func step(_ latents: inout [Float], velocity: [Float], index: Int) {
        let delta = sigmas[index + 1] - sigmas[index]
        for position in latents.indices { latents[position] += delta * velocity[position] }
    }
}

/// FLUX's latent layout: [1, C, h, w] images packed as 2×2 patches into [1, (h/2)(w/2), 4C]
/// tokens, and the tokens' position ids [0, row, column].
public enum LatentPacking {
    /// Latents [C, H, W] as FLUX's tokens [(H/2)(W/2), 4C] (2×2 patches).
    public static func pack(_ latents: [Float], channels: Int, height: Int, width: Int) -> [Float] {
        var packed = [Float](repeating: 0, count: latents.count)
        for c in 0..<channels { for y in 0..<height { for x in 0..<width {
            let token = (y / 2) * (width / 2) + x / 2
            packed[token * channels * 4 + c * 4 + (y % 2) * 2 + x % 2] = latents[(c * height + y) * width + x]
        } } }
        return packed
    }

    /// Tokens back to latents [C, H, W].
    public static func unpack(_ packed: [Float], channels: Int, height: Int, width: Int) -> [Float] {
        var latents = [Float](repeating: 0, count: packed.count)
        for c in 0..<channels { for y in 0..<height { for x in 0..<width {
            let token = (y / 2) * (width / 2) + x / 2
            latents[(c * height + y) * width + x] = packed[token * channels * 4 + c * 4 + (y % 2) * 2 + x % 2]
        } } }
        return latents
    }

    /// [tokens, 3] position ids of the packed latents.
    public static func imageIds(height: Int, width: Int) -> HostTensor {
        var ids: [Float] = []
        for row in 0..<(height / 2) { for column in 0..<(width / 2) { ids += [0, Float(row), Float(column)] } }
        return HostTensor(shape: [(height / 2) * (width / 2), 3], floats: ids)
    }
}

/// Standard normal noise from a seed: xoshiro256** seeded through SplitMix64, Box–Muller
/// pairs (cos then sin), rounded to float32. Reproducible across machines and backends;
/// not torch's generator (import torch's noise with `--noise` for exact comparisons).
public struct GaussianNoise {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    /// Noise fixed by `seed`.
    public init(seed: UInt64) {
        var mix = seed
        func next() -> UInt64 {
            mix &+= 0x9E37_79B9_7F4A_7C15
            var z = mix
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (next(), next(), next(), next())
    }

    private mutating func next() -> UInt64 {
        let result = ((state.1 &* 5) << 7 | (state.1 &* 5) >> 57) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = state.3 << 45 | state.3 >> 19
        return result
    }

    /// A uniform double in (0, 1].
    private mutating func uniform() -> Double { Double((next() >> 11) + 1) / Double(1 << 53) }

    /// The next `count` standard normal samples.
    public mutating func sample(_ count: Int) -> [Float] {
        var values: [Float] = []
        values.reserveCapacity(count + 1)
        while values.count < count {
            let radius = (-2 * Foundation.log(uniform())).squareRoot(), angle = 2 * Double.pi * uniform()
            values.append(Float(radius * cos(angle)))
            values.append(Float(radius * sin(angle)))
        }
        return Array(values.prefix(count))
    }
}
