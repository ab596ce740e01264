import LoRAFuse
import LoRAFuseModels
/// Why a LoRA file could not be used: one line naming the file, the key and the shapes.
public enum LoRAError: Error, Sendable, CustomStringConvertible, Equatable {
    case notALoRA(path: String, reason: String)
    /// Keys that name no layer of the model (listed, at most 12, with the total).
    case unmatchedKeys(path: String, keys: [String])
    /// A module with a down (A) factor but no up (B), or the reverse.
    case incompleteModule(path: String, module: String, missing: String)
    case shapeMismatch(path: String, key: String, actual: Shape, expected: String)
    case invalidAlpha(path: String, key: String, reason: String)
    /// Two modules of one file land on the same layer.
    case duplicateTarget(path: String, layer: String, keys: [String])
    /// A `FILE:SCALE` argument whose scale is not a usable number.
    case invalidScale(argument: String, reason: String)
    /// A factor with NaN or infinity.
    case nonFiniteFactor(path: String, key: String, index: Int)

    public var description: String {
        switch self {
        case let .notALoRA(path, reason): "\(path): not a LoRA file: \(reason)"
        case let .unmatchedKeys(path, keys):
            "\(path): \(keys.count) LoRA key(s) match no layer of the model: "
                + keys.prefix(12).joined(separator: ", ") + (keys.count > 12 ? ", …" : "")
                + " (--allow-unmatched-lora-keys warns instead)"
        case let .incompleteModule(path, module, missing): "\(path): LoRA module '\(module)' has no \(missing) factor"
        case let .shapeMismatch(path, key, actual, expected): "\(path): '\(key)' has shape \(actual), the model needs \(expected)"
        case let .invalidAlpha(path, key, reason): "\(path): alpha of '\(key)': \(reason)"
        case let .duplicateTarget(path, layer, keys): "\(path): layer '\(layer)' is targeted twice (\(keys.joined(separator: ", ")))"
        case let .invalidScale(argument, reason): "\(argument): bad LoRA scale: \(reason) (FILE[:SCALE], SCALE a number in [−\(Int(LoRAAdapter.maximumScale)), \(Int(LoRAAdapter.maximumScale))])"
        case let .nonFiniteFactor(path, key, index): "\(path): '\(key)' holds a non-finite value (at flat index \(index))"
        }
    }
}
