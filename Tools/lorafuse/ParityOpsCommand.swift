import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// `lorafuse parity-ops`: every op of the catalogue on one backend against another (or
/// against the float64 reference), like ggml's test-backend-ops.
struct ParityOpsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parity-ops",
        abstract: "Run every op on many shapes and dtypes on a backend and compare with the CPU backend (or float64).",
        discussion: """
            Prints op, shapes/dtypes, max relative error and pass/fail; exits non-zero on any failure. A case the backend \
            declines (its supports() check, e.g. an op disabled with LORAFUSE_VULKAN_DISABLE_OPS or a shape past a device \
            limit) is reported as unsupported with the reason, not as a failure: in a pipeline the scheduler runs it elsewhere.
            """
    )

    @OptionGroup var backendOptions: BackendOptions

    @Option(name: .long, help: "What to compare with: a backend name (default cpu) or 'float64' for the reference evaluator.")
    var against = "cpu"

    @Option(name: .long, help: "Only ops whose family contains this text (e.g. matmul, attention).")
    var filter: String?

    @Flag(name: .long, help: "Print one JSON object per case.")
    var json = false

    func run() throws {
        let backend = try backendOptions.makeUnscheduledBackend()
        let reference: (any Backend)? = against == "float64" ? nil : try BackendRegistry.shared.makeBackend(named: against)
        let cases = OpCaseCatalog.all().filter { filter == nil || $0.op.rawValue.localizedCaseInsensitiveContains(filter!) }
        guard !cases.isEmpty else { throw ValidationError("no op matches --filter \(filter ?? "")") }
        if !json {
            print("\(backend.name) (\(backend.device.name)) against \(reference.map { "\($0.name) (\($0.device.name))" } ?? "float64 reference")")
            print("op               case                                         max rel err  tolerance  result")
        }
        var failures = 0, unsupported = 0
        for opCase in cases {
            let graph = opCase.graph
            if let declined = graph.nodes.lazy.compactMap({ node in backend.supports(node, in: graph).reason.map { (node, $0) } }).first {
                unsupported += 1
                let reason = "node %\(declined.0.id) \(declined.0.op.summary): \(declined.1)"
                if json {
                    print(try JSONOutput.line(["op": opCase.op.rawValue, "case": opCase.label, "backend": backend.name, "against": against,
                                               "supported": false, "reason": reason]))
                } else {
                    print("\(opCase.op.rawValue.padding(toLength: 16, withPad: " ", startingAt: 0)) "
                          + "\(opCase.label.padding(toLength: 44, withPad: " ", startingAt: 0)) unsupported: \(reason)")
                }
                continue
            }
            var actual: [Float] = []
            var expected: [Double] = []
            var failure: String?
            do {
                actual = try backend.execute(opCase.graph, inputs: opCase.inputs).outputs[0].floats()
                if let reference {
                    expected = try reference.execute(opCase.graph, inputs: opCase.inputs).outputs[0].floats().map(Double.init)
                } else {
                    expected = try ReferenceEvaluator.evaluate(opCase.graph, inputs: opCase.inputs)[0].values
                }
            } catch {
                failure = "\(error)"
            }
            // Against another float32 backend allow twice the tolerance: both differ from float64.
            let tolerance = reference == nil ? opCase.tolerance : opCase.tolerance * 2
            let error = failure == nil ? relativeError(actual: actual, expected: expected) : .infinity
            let passed = failure == nil && error <= tolerance
            if !passed { failures += 1 }
            if json {
                var fields: [String: Any] = ["op": opCase.op.rawValue, "case": opCase.label, "backend": backend.name,
                                             "against": against, "tolerance": tolerance, "pass": passed, "supported": true]
                fields["max_relative_error"] = error.isFinite ? error : -1
                if let failure { fields["error"] = failure }
                print(try JSONOutput.line(fields))
            } else {
                let errorText = failure ?? String(format: "%.3e", error)
                print("\(opCase.op.rawValue.padding(toLength: 16, withPad: " ", startingAt: 0)) "
                      + "\(opCase.label.padding(toLength: 44, withPad: " ", startingAt: 0)) "
                      + "\(errorText.padding(toLength: 12, withPad: " ", startingAt: 0)) "
                      + "\(String(format: "%.0e", tolerance).padding(toLength: 10, withPad: " ", startingAt: 0)) \(passed ? "ok" : "FAIL")")
            }
        }
        if !json { print("\(cases.count - failures - unsupported) passed, \(failures) failed, \(unsupported) unsupported") }
        if failures > 0 { throw ExitCode.failure }
    }
}
