import Testing
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// IEEE propagation: a NaN or infinity in an input gives non-finite outputs exactly where the
/// float64 reference has them, on every backend (the CPU backend must not hide a NaN behind
/// a clamp or a max, which would turn a broken input into a plausible image).
@Suite(.serialized) struct NonFiniteTests {
    /// The catalogue's cases with a float input, one value of it replaced.
    static func poisonedCases(_ value: Float) -> [(OpCase, [String: HostTensor])] {
        OpCaseCatalog.all().compactMap { opCase in
            // Top-K selection ranks magnitudes; with a NaN the choice is not defined.
            guard opCase.op != .topKAbsSum, opCase.op != .lowRankTopKAbsSum else { return nil }
            guard let name = opCase.inputs.keys.sorted().first(where: { opCase.inputs[$0]!.dtype == .float32 }) else { return nil }
            var values = opCase.inputs[name]!.floats()
            values[values.count / 2] = value
            var inputs = opCase.inputs
            inputs[name] = HostTensor(shape: opCase.inputs[name]!.shape, floats: values)
            return (opCase, inputs)
        }
    }

    @Test(arguments: [Float.nan, Float.infinity])
    func nonFiniteInputsPropagateAsInTheReference(_ value: Float) throws {
        let cases = Self.poisonedCases(value)
        #expect(cases.count > 40)
        var failures: [String] = []
        for (opCase, inputs) in cases {
            let expected = try ReferenceEvaluator.evaluate(opCase.graph, inputs: inputs)[0].values.map { !$0.isFinite }
            for backend in BackendsUnderTest.all {
                let actual = try backend.execute(opCase.graph, inputs: inputs).outputs[0].floats().map { !$0.isFinite }
                if actual != expected {
                    let missing = zip(actual, expected).filter { !$0 && $1 }.count, extra = zip(actual, expected).filter { $0 && !$1 }.count
                    failures.append("\(BackendsUnderTest.label(backend)) \(opCase.name): \(missing) non-finite values lost, \(extra) added")
                }
            }
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
    }

    /// A non-finite output is an error that names the first node whose value is not finite:
    /// the broken weight, or the op that overflowed.
    @Test func diagnosisNamesTheFirstNonFiniteNode() throws {
        var random = SeededRandom(seed: 7)
        var weights = random.tensor([5, 9]).floats()
        weights[13] = .nan
        var graph = Graph()
        let x = graph.input("x", [3, 9])
        let w = graph.parameter("blocks.0.weight", HostTensor(shape: [5, 9], floats: weights))
        graph.markOutput(try graph.gelu(graph.matmul(x, w, transposeB: true)))
        var overflow = Graph()
        let y = overflow.input("x", [3, 9])
        let big = try overflow.scale(y, 1e30)
        overflow.label(big, "first scale")
        let bigger = try overflow.scale(big, 1e30)
        overflow.label(bigger, "second scale")
        overflow.markOutput(try overflow.unary(.relu, bigger))
        let inputs = ["x": random.tensor([3, 9])]
        for backend in BackendsUnderTest.all {
            for (graph, expected) in [(graph, "%1 parameter 'blocks.0.weight'"), (overflow, "(second scale)")] {
                let outputs = try backend.execute(graph, inputs: inputs).outputs
                do {
                    try NonFiniteDiagnosis.check(outputs, stage: "test", graph: graph, inputs: inputs, on: backend)
                    Issue.record("\(BackendsUnderTest.label(backend)): a non-finite output passed (\(expected))")
                } catch let error as NonFiniteOutput {
                    #expect(error.origin.contains(expected), "\(BackendsUnderTest.label(backend)): \(error)")
                }
            }
        }
    }
}
