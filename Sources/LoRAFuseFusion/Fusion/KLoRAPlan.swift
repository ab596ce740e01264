import Foundation
import LoRAFuse
import LoRAFuseModels

/// K-LoRA's per-layer selection (Ouyang et al., CVPR 2025, Eqs. 1–10; docs/contracts.md
/// "Reference math"), computed once from the two LoRA files.
///
/// For every unit both LoRAs touch, ΔW = (α/r)·B·A per LoRA (α/r is applied: it is the
/// update the LoRA actually makes, and it makes LoRAs trained with different α comparable),
/// K = r_c·r_s (Eq. 5), S_c and S_s = the sums of the K largest |ΔW| (exact Top-K), and
/// γ = Σ|ΔW_c| / Σ|ΔW_s| over all shared units (Eq. 9). At progress p the unit applies the
/// content LoRA when S_c ≥ γ·S(p)·S_s, else the style LoRA, with S(p) = α·p + β (Eq. 7)
/// or the periodic S*(p) = (1.5·p + 1.3) mod 1.5 (Eq. 12).
///
/// A unit is one (A, B) pair as the files define it: a fused `qkv` in both files is one
/// unit over q, k and v (Top-K over the whole fused ΔW); when one file is fused and the
/// other is not, the fused one is split into the other's parts.
///
/// Deliberate differences from the official code (HVision-NKU/K-LoRA): α and β as in the
/// paper (its pseudo-code swaps them), γ from the sums of all |ΔW| (not per-layer ratios
/// with outliers dropped), and every FLUX layer both LoRAs touch takes part.
public struct KLoRAPlan: Sendable, Codable, Equatable {
    /// One layer unit K-LoRA chooses for: its Top-K sums for the content and the style LoRA.
    public struct Unit: Sendable, Codable, Equatable {
        /// The diffusers Linears this unit covers (one, or the parts of a fused module).
        public var layers: [String]
        public var contentRank: Int
        public var styleRank: Int
        /// r_c · r_s, capped at the number of entries.
        public var k: Int
        /// S_c, S_s: sums of the K largest |ΔW|.
        public var contentTopK: Double
        public var styleTopK: Double
        /// Σ|ΔW| of each LoRA, for γ.
        public var contentAbsSum: Double
        public var styleAbsSum: Double
    }

    /// How the style weight S(t) moves with sampling progress.
    public enum Schedule: String, Sendable, Codable, CaseIterable {
        /// S(p) = α·p + β (Eq. 7).
        case linear
        /// S*(p) = (1.5·p + 1.3) mod 1.5 (supplement, Eq. 12).
        case periodic
    }

    public static let formatVersion = 1
    public var version = KLoRAPlan.formatVersion
    public var contentHash: String
    public var styleHash: String
    public var units: [Unit]
    /// Layers only one LoRA touches: they keep that LoRA at every step.
    public var contentOnly: [String]
    public var styleOnly: [String]

    /// γ (Eq. 9).
    public var gamma: Double {
        let style = units.reduce(0) { $0 + $1.styleAbsSum }
        return style > 0 ? units.reduce(0) { $0 + $1.contentAbsSum } / style : .infinity
    }

    /// S(t) at `progress` (0 at the first step, 1 at the last).
    public static func scale(progress: Double, alpha: Double, beta: Double, schedule: Schedule) -> Double {
        switch schedule {
        case .linear: alpha * progress + beta
        case .periodic: (1.5 * progress + 1.3).truncatingRemainder(dividingBy: 1.5)
        }
    }

    /// Whether `unit` applies the content LoRA at `progress` (Eqs. 6, 8, 10).
    public func usesContent(_ unit: Unit, progress: Double, alpha: Double = 1.5, beta: Double = 0.5,
                            schedule: Schedule = .linear) -> Bool {
        unit.contentTopK >= gamma * Self.scale(progress: progress, alpha: alpha, beta: beta, schedule: schedule) * unit.styleTopK
    }

    /// The progress up to which the unit is content under the linear schedule:
    /// p* = (S_c / (γ·S_s) − β) / α (below 0: always style; above 1: always content).
    public func switchProgress(_ unit: Unit, alpha: Double = 1.5, beta: Double = 0.5) -> Double {
        (unit.contentTopK / (gamma * unit.styleTopK) - beta) / alpha
    }

    /// The layers that apply the content LoRA and those that apply the style LoRA at `progress`.
    public func selection(progress: Double, alpha: Double = 1.5, beta: Double = 0.5,
                          schedule: Schedule = .linear) -> (content: Set<String>, style: Set<String>) {
        var content = Set(contentOnly), style = Set(styleOnly)
        for unit in units {
            if usesContent(unit, progress: progress, alpha: alpha, beta: beta, schedule: schedule) {
                content.formUnion(unit.layers)
            } else {
                style.formUnion(unit.layers)
            }
        }
        return (content, style)
    }
}
