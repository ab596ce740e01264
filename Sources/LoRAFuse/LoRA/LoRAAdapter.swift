/// A loaded LoRA with the user's scale `s`: the layers it touches gain s·(α/r)·B·A, the
/// semantics of diffusers' `set_adapters(weights=…)`.
public struct LoRAAdapter: Sendable {
    public let file: LoRAFile
    public var scale: Float

    public init(file: LoRAFile, scale: Float = 1) {
        self.file = file
        self.scale = scale
    }

    /// Parses `FILE[:SCALE]` (the scale is the text after the last ':' when it is a number,
    /// so paths with ':' still work).
    public static func parseArgument(_ argument: String) -> (path: String, scale: Float) {
        if let colon = argument.lastIndex(of: ":"), let scale = Float(argument[argument.index(after: colon)...]), scale.isFinite {
            return (String(argument[..<colon]), scale)
        }
        return (argument, 1)
    }
}
