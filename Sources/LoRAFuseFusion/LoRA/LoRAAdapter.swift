import LoRAFuse
import LoRAFuseModels
/// A loaded LoRA with the user's scale `s`: the layers it touches gain s·(α/r)·B·A, the
/// semantics of diffusers' `set_adapters(weights=…)`.
public struct LoRAAdapter: Sendable {
    public let file: LoRAFile
    public var scale: Float

    /// The LoRA in `file` at `scale` (its own α/r applied on top).
    public init(file: LoRAFile, scale: Float = 1) {
        self.file = file
        self.scale = scale
    }

    /// The largest |scale| taken: far past any useful strength (LoRAs are used at 0–2), small
    /// enough that s·α/r·B·A cannot overflow float32 for factors of sane size.
    public static let maximumScale: Float = 100

    /// Parses `FILE[:SCALE]`. A path that exists is taken whole (so paths with ':' work);
    /// otherwise text after the last ':' is the scale, and must be a finite number within
    /// ±`maximumScale` when it looks like one or when the path before it exists.
    public static func parseArgument(_ argument: String) throws(LoRAError) -> (path: String, scale: Float) {
        guard !argument.isEmpty else { throw LoRAError.notALoRA(path: "''", reason: "the LoRA path is empty") }
        guard !InputFile.exists(argument), let colon = argument.lastIndex(of: ":") else { return (argument, 1) }
        let path = String(argument[..<colon]), text = argument[argument.index(after: colon)...]
        let looksNumeric = !text.isEmpty && text.allSatisfy { "0123456789+-.eE".contains($0) }
            || ["nan", "inf", "infinity", "+inf", "-inf"].contains(text.lowercased())
        guard looksNumeric || InputFile.exists(path) else { return (argument, 1) }
        guard let scale = Float(text) else { throw LoRAError.invalidScale(argument: argument, reason: "'\(text)' is not a number") }
        guard scale.isFinite else { throw LoRAError.invalidScale(argument: argument, reason: "\(text) is not finite") }
        guard abs(scale) <= maximumScale else { throw LoRAError.invalidScale(argument: argument, reason: "\(text) is out of range") }
        guard !path.isEmpty else { throw LoRAError.notALoRA(path: "''", reason: "the LoRA path is empty") }
        return (path, scale)
    }
}
