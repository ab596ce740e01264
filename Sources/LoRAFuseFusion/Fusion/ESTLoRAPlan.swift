import Foundation
import LoRAFuse
import LoRAFuseModels

/// EST-LoRA's per-layer selection (arXiv 2508.02165, "Subject or Style: Adaptive and
/// Training-Free Mixture of LoRAs"), as the authors' code (github.com/Godz-z/EST-LoRA, a
/// modified copy of K-LoRA's) computes it; docs/contracts.md "Sampling progress" gives the math,
/// README "K-LoRA and the fusion baselines" where this follows the code rather than the paper.
///
/// For every Linear both LoRAs touch, the energy E = ‖B·A‖²_F of each LoRA's product as the
/// file stores it (no α/r: the code multiplies `lora_B @ lora_A` straight from the file),
/// and Σ|B·A| for γ, the code's `get_ratio_between_content_and_style`: the mean of the
/// per-layer ratios Σ|B_c·A_c| / Σ|B_s·A_s|, the ratios of 3× the mean or more dropped,
/// the mean of the rest. A layer applies the content LoRA while (E_c / γ) / (E_s · S) > 1,
/// else the style LoRA.
///
/// The progress S is evaluated at is the code's: a counter that every call of a fused Linear
/// advances, over T = steps × L calls for L fused layers (`sum_timesteps`), so the l-th fused
/// layer (0-based, in `FluxConfig.linearCallOrder`) of step s sees t = ((s·L + l + 1) mod T) / T.
/// S(t) = α·t + β, or for the `s*` pattern (the code's FLUX default) (α·t + β) mod α.
public struct ESTLoRAPlan: Sendable, Codable, Equatable {
    /// One Linear both LoRAs touch.
    public struct Layer: Sendable, Codable, Equatable {
        /// The diffusers name.
        public var name: String
        /// E = ‖B·A‖²_F of the content and of the style LoRA.
        public var contentEnergy: Double
        public var styleEnergy: Double
        /// Σ|B·A| of each, for γ.
        public var contentAbsSum: Double
        public var styleAbsSum: Double
    }

    /// How S(t) moves with the progress t.
    public enum Schedule: String, Sendable, Codable, CaseIterable {
        /// S(t) = α·t + β (the code's pattern other than `s*`; its FLUX script sets β = 0.75).
        case linear
        /// `s*`: S(t) = (α·t + β) mod α (the FLUX script's default, with β = 1.275).
        case periodic

        /// β as the authors' FLUX script sets it for this schedule: α × 0.85 for `s*`, α × 0.5 otherwise.
        public func defaultBeta(alpha: Double = ESTLoRAPlan.defaultAlpha) -> Double {
            alpha * (self == .periodic ? 0.85 : 0.5)
        }
    }

    /// α of the authors' FLUX script.
    public static let defaultAlpha = 1.5
    public static let formatVersion = 1
    public var version = ESTLoRAPlan.formatVersion
    public var contentHash: String
    public var styleHash: String
    /// The fused layers, in the order a forward calls them.
    public var layers: [Layer]
    /// γ (see the type's documentation).
    public var gamma: Double
    /// Layers only one LoRA touches: they keep that LoRA at every step.
    public var contentOnly: [String]
    public var styleOnly: [String]

    /// γ from per-layer Σ|B·A| of the content and the style LoRA: the mean of the ratios, the
    /// ratios ≥ 3 × the mean dropped, the mean of the rest (infinite when none is left).
    public static func gamma(contentAbsSums: [Double], styleAbsSums: [Double]) -> Double {
        let ratios = zip(contentAbsSums, styleAbsSums).map { $0 / $1 }
        guard !ratios.isEmpty else { return .infinity }
        let mean = ratios.reduce(0, +) / Double(ratios.count)
        let kept = ratios.filter { $0 < 3 * mean }
        return kept.isEmpty ? .infinity : kept.reduce(0, +) / Double(kept.count)
    }

    /// S at progress `t`; the periodic schedule takes the floored remainder (Python's `%`).
    public static func scale(progress t: Double, alpha: Double, beta: Double, schedule: Schedule) -> Double {
        let linear = alpha * t + beta
        switch schedule {
        case .linear: return linear
        case .periodic: return linear - alpha * (linear / alpha).rounded(.down)
        }
    }

    /// The progress the code's call counter gives the `index`-th fused layer at `step` (from 0)
    /// of a `steps`-step run: ((step·L + index + 1) mod (steps·L)) / (steps·L).
    public func progress(layer index: Int, step: Int, steps: Int) -> Double {
        let total = max(1, steps) * layers.count
        return Double((step * layers.count + index + 1) % total) / Double(total)
    }

    /// Whether the `index`-th fused layer applies the content LoRA at `step` of `steps`:
    /// (E_c / γ) / (E_s · S) > 1, in IEEE arithmetic as the code's tensors do it.
    public func usesContent(layer index: Int, step: Int, steps: Int, alpha: Double = ESTLoRAPlan.defaultAlpha,
                            beta: Double = Schedule.periodic.defaultBeta(), schedule: Schedule = .periodic) -> Bool {
        let layer = layers[index]
        let scale = Self.scale(progress: progress(layer: index, step: step, steps: steps), alpha: alpha, beta: beta, schedule: schedule)
        return (layer.contentEnergy / gamma) / (layer.styleEnergy * scale) > 1
    }

    /// The layers that apply the content LoRA and those that apply the style LoRA at `step` of `steps`.
    public func selection(step: Int, steps: Int, alpha: Double = ESTLoRAPlan.defaultAlpha,
                          beta: Double = Schedule.periodic.defaultBeta(), schedule: Schedule = .periodic)
        -> (content: Set<String>, style: Set<String>) {
        var content = Set(contentOnly), style = Set(styleOnly)
        for (index, layer) in layers.enumerated() {
            if usesContent(layer: index, step: step, steps: steps, alpha: alpha, beta: beta, schedule: schedule) {
                content.insert(layer.name)
            } else {
                style.insert(layer.name)
            }
        }
        return (content, style)
    }
}

/// EST-LoRA during sampling: at every step each fused layer applies the LoRA its plan
/// chooses, hot, at the user's scale; layers only one LoRA touches keep it. A lookup per
/// layer and step: no matrix work while sampling.
public struct ESTLoRAFusion: Sendable {
    public let plan: ESTLoRAPlan
    public let content: LoRAAdapter
    public let style: LoRAAdapter
    public var alpha = ESTLoRAPlan.defaultAlpha
    public var beta = ESTLoRAPlan.Schedule.periodic.defaultBeta()
    public var schedule = ESTLoRAPlan.Schedule.periodic

    /// EST-LoRA over `plan` with the authors' FLUX defaults (`s*`, α = 1.5, β = 1.275).
    public init(plan: ESTLoRAPlan, content: LoRAAdapter, style: LoRAAdapter) {
        self.plan = plan
        self.content = content
        self.style = style
    }

    /// The adapters to apply hot at `step` (from 0) of a `steps`-step run.
    public func adapters(step: Int, steps: Int) -> [LoRAAdapter] {
        let (contentLayers, styleLayers) = plan.selection(step: step, steps: steps, alpha: alpha, beta: beta, schedule: schedule)
        return [LoRAAdapter(file: content.file.restricted(to: contentLayers), scale: content.scale),
                LoRAAdapter(file: style.file.restricted(to: styleLayers), scale: style.scale)]
    }
}
