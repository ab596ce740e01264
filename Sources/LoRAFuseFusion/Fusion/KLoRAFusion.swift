import LoRAFuse
import LoRAFuseModels
/// K-LoRA during sampling: at progress p (= step / steps, 0 at pure noise, documented in
/// docs/contracts.md) every unit applies the LoRA its plan chooses, hot, at the user's scale; layers
/// only one LoRA touches keep it. The choice is a lookup in the plan: no Top-K work per step,
/// and one LoRA path per layer, as with a single LoRA.
public struct KLoRAFusion: Sendable {
    public let plan: KLoRAPlan
    public let content: LoRAAdapter
    public let style: LoRAAdapter
    public var alpha: Double = 1.5
    public var beta: Double = 0.5
    public var schedule: KLoRAPlan.Schedule = .linear

    /// K-LoRA over `plan` for this content and style LoRA, with the paper's schedule.
    public init(plan: KLoRAPlan, content: LoRAAdapter, style: LoRAAdapter) {
        self.plan = plan
        self.content = content
        self.style = style
    }

    /// The adapters to apply hot at `progress`.
    public func adapters(progress: Double) -> [LoRAAdapter] {
        let (contentLayers, styleLayers) = plan.selection(progress: progress, alpha: alpha, beta: beta, schedule: schedule)
        return [LoRAAdapter(file: content.file.restricted(to: contentLayers), scale: content.scale),
                LoRAAdapter(file: style.file.restricted(to: styleLayers), scale: style.scale)]
    }
}

/// Orders layer names as a person reads them: digit runs compare as numbers
/// (`transformer_blocks.2` before `transformer_blocks.10`).
public func naturallyOrdered(_ names: some Sequence<String>) -> [String] {
    func pieces(_ name: String) -> [(String, Int?)] {
        var result: [(String, Int?)] = []
        var current = "", digits = false
        for character in name {
            if character.isNumber != digits, !current.isEmpty {
                result.append((current, digits ? Int(current) : nil))
                current = ""
            }
            digits = character.isNumber
            current.append(character)
        }
        if !current.isEmpty { result.append((current, digits ? Int(current) : nil)) }
        return result
    }
    return names.sorted { left, right in
        for (a, b) in zip(pieces(left), pieces(right)) {
            if let x = a.1, let y = b.1, x != y { return x < y }
            if a.0 != b.0 { return a.0 < b.0 }
        }
        return left.count < right.count
    }
}
