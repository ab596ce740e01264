import LoRAFuse
import LoRAFuseModels
/// How a content and a style LoRA are combined at one sampling step.
///
/// - `merge`: both LoRAs at once at their scales, the weighted sum of both updates —
///   diffusers' `set_adapters([c, s], weights=[s_c, s_s])`, the usual baseline.
/// - `klora`: K-LoRA (Ouyang et al., CVPR 2025): per layer, the LoRA whose Top-K
///   magnitude wins against the progress-dependent scale (see `KLoRAPlan`).
/// - `estlora`: EST-LoRA (arXiv 2508.02165): per layer, the LoRA whose energy ‖B·A‖²_F
///   wins against the progress-dependent scale, the progress advancing with every fused
///   layer's call (see `ESTLoRAPlan`).
/// - `switch`: LoRA Switch (Zhong et al., "Multi-LoRA Composition for Image Generation",
///   2024): one LoRA active at a time, alternating every `switchEvery` steps, content first.
/// - `composite`: LoRA Composite (same paper): one prediction per LoRA at every step, each
///   with only that LoRA, averaged (two forward passes per step).
/// - `fixed`: content for the first `fixedFraction` of the steps, style after (a
///   hand-made schedule, the simplest time-based split).
/// - `random`: every layer both LoRAs touch picks one of them at random (seeded, fixed for
///   all steps): the control that shows whether K-LoRA's choice matters.
public enum FusionMethod: String, Sendable, CaseIterable {
    case merge, klora, estlora
    case switching = "switch"
    case composite, fixed, random
}

/// A content/style fusion, ready to give the LoRAs each forward pass applies.
public struct LoRAFusion: Sendable {
    public let method: FusionMethod
    public let content: LoRAAdapter
    public let style: LoRAAdapter
    /// Needed for `klora`.
    public var klora: KLoRAFusion?
    /// Needed for `estlora`.
    public var estlora: ESTLoRAFusion?
    public var switchEvery = 1
    public var fixedFraction = 0.5
    public var seed: UInt64 = 0

    /// A fusion of `content` and `style` by `method`, with the method's defaults.
    public init(method: FusionMethod, content: LoRAAdapter, style: LoRAAdapter) {
        self.method = method
        self.content = content
        self.style = style
    }

    /// The forward passes of one step, each as its hot adapters; the step's prediction is
    /// the mean of the passes (two for `composite`, one otherwise). `progress` = step / steps
    /// (0 at pure noise); `step` counts from 0 (used by `switch`) of `steps` (used by `estlora`).
    public func passes(progress: Double, step: Int, steps: Int) -> [[LoRAAdapter]] {
        switch method {
        case .merge:
            return [[content, style]]
        case .klora:
            return [klora!.adapters(progress: progress)]
        case .estlora:
            return [estlora!.adapters(step: step, steps: steps)]
        case .switching:
            return [[(step / max(1, switchEvery)) % 2 == 0 ? content : style]]
        case .composite:
            return [[content], [style]]
        case .fixed:
            return [[progress < fixedFraction ? content : style]]
        case .random:
            let contentLayers = Set(content.file.modules.map(\.layer)), styleLayers = Set(style.file.modules.map(\.layer))
            var keepContent = contentLayers.subtracting(styleLayers), keepStyle = styleLayers.subtracting(contentLayers)
            for layer in contentLayers.intersection(styleLayers) {
                var random = SeededRandom(seed: seed ^ Self.layerHash(layer))
                if random.next() & 1 == 0 { keepContent.insert(layer) } else { keepStyle.insert(layer) }
            }
            return [[LoRAAdapter(file: content.file.restricted(to: keepContent), scale: content.scale),
                     LoRAAdapter(file: style.file.restricted(to: keepStyle), scale: style.scale)]]
        }
    }

    /// FNV-1a of the layer name, so each layer's coin is independent of the others.
    static func layerHash(_ name: String) -> UInt64 {
        name.utf8.reduce(0xCBF2_9CE4_8422_2325) { ($0 ^ UInt64($1)) &* 0x0000_0100_0000_01B3 }
    }
}
