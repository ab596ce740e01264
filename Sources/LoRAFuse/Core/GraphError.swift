/// A graph that cannot be built: the op, and what about its operands is wrong.
public struct GraphError: Error, Sendable, CustomStringConvertible, Equatable {
    public let op: String
    public let message: String

    /// An error building op `op`, explained by `message`.
    public init(op: String, _ message: String) {
        self.op = op
        self.message = message
    }

    public var description: String { "\(op): \(message)" }
}
