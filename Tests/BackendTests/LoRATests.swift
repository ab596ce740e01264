import Foundation
import Testing
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// LoRAs on the FLUX transformer against peft + diffusers in float64
/// (Tools/reference/make_lora_fixtures.py): every format, both model layouts, hot and
/// merged, on every backend.
@Suite(.serialized) struct LoRAApplicationTests {
    static let fixtures = FluxTransformerTests.fixtures.deletingLastPathComponent().appendingPathComponent("lora")
    static let diffusersModel = FluxTransformerTests.fixtures.appendingPathComponent("dev-tiny").path
    static let bflModel = FluxTransformerTests.fixtures.appendingPathComponent("dev-tiny/flux_bfl.safetensors").path

    struct Case: Sendable, CustomTestStringConvertible {
        let loras: [(String, Float)]
        let model: String
        let expected: String
        var testDescription: String {
            loras.map { "\($0.0):\($0.1)" }.joined(separator: " + ") + (model.hasSuffix(".safetensors") ? " on BFL" : " on diffusers")
        }
    }

    static let cases: [Case] = [
        Case(loras: [("all.peft", 1)], model: diffusersModel, expected: "expected_all"),
        Case(loras: [("all.kohya", 1)], model: diffusersModel, expected: "expected_all"),
        Case(loras: [("all.bfl", 1)], model: diffusersModel, expected: "expected_all"),
        Case(loras: [("all.peft", 1)], model: bflModel, expected: "expected_all"),
        Case(loras: [("all.kohya", 1)], model: bflModel, expected: "expected_all"),
        Case(loras: [("all.peft", 0.7), ("partial.peft", -1.3)], model: diffusersModel, expected: "expected_pair"),
        Case(loras: [("attention.xlabs", 1)], model: diffusersModel, expected: "expected_attention"),
        Case(loras: [("attention.diffsynth", 1)], model: bflModel, expected: "expected_attention"),
    ]

    static func run(_ testCase: Case, merge: Bool, on backend: any Backend) throws -> (HostTensor, HostTensor) {
        let model = try FluxModel.load(path: testCase.model)
        let folder = FluxTransformerTests.fixtures.appendingPathComponent("dev-tiny")
        let inputs = try FluxInputs(SafeTensorsFile(path: folder.appendingPathComponent("inputs.safetensors").path).allTensors(),
                                    config: model.config)
        let adapters = try testCase.loras.map { name, scale in
            LoRAAdapter(file: try LoRAFile.load(path: fixtures.appendingPathComponent("\(name).safetensors").path, model: model), scale: scale)
        }
        let transformer = merge ? FluxTransformer(model: try model.merging(adapters, on: backend)) : FluxTransformer(model: model, adapters: adapters)
        let graph = try transformer.graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
        let sample = try backend.execute(graph, inputs: inputs.bindings).outputs[0]
        let expected = try SafeTensorsFile(path: fixtures.appendingPathComponent("\(testCase.expected).safetensors").path).tensor(named: "sample")
        return (sample, expected)
    }

    /// Hot (a lowRankUpdate node per Linear) and merged (W + ΔW computed on the backend).
    @Test(arguments: cases, [false, true])
    func matchesPeft(_ testCase: Case, merged: Bool) throws {
        for backend in BackendsUnderTest.all {
            let (sample, expected) = try Self.run(testCase, merge: merged, on: backend)
            let error = relativeError(actual: sample.floats(), expected: expected.doubles())
            #expect(error <= 1e-4, "\(BackendsUnderTest.label(backend)): relative error \(error)")
        }
    }

    /// The expected outputs really depend on the LoRAs (so a skipped LoRA cannot pass).
    @Test func loraChangesTheOutput() throws {
        let base = try SafeTensorsFile(path: FluxTransformerTests.fixtures.appendingPathComponent("dev-tiny/expected.safetensors").path)
            .tensor(named: "sample").doubles()
        for name in ["expected_all", "expected_pair", "expected_attention"] {
            let expected = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("\(name).safetensors").path).tensor(named: "sample")
            #expect(relativeError(actual: expected.floats(), expected: base) > 0.05, "\(name)")
        }
    }

    /// Hot LoRAs re-weighted or removed between passes on one backend, without reloading:
    /// scale 0 gives the base model, and the weights already on the device are reused.
    @Test func reweightingBetweenPasses() throws {
        let model = try FluxModel.load(path: Self.diffusersModel)
        let folder = FluxTransformerTests.fixtures.appendingPathComponent("dev-tiny")
        let inputs = try FluxInputs(SafeTensorsFile(path: folder.appendingPathComponent("inputs.safetensors").path).allTensors(),
                                    config: model.config)
        let base = try SafeTensorsFile(path: folder.appendingPathComponent("expected.safetensors").path).tensor(named: "sample")
        let all = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("expected_all.safetensors").path).tensor(named: "sample")
        var transformer = FluxTransformer(model: model, adapters: [
            LoRAAdapter(file: try LoRAFile.load(path: Self.fixtures.appendingPathComponent("all.peft.safetensors").path, model: model))])
        let backend = BackendsUnderTest.all.last!
        for (scale, expected) in [(Float(1), all), (0, base), (1, all)] {
            transformer.adapters[0].scale = scale
            let graph = try transformer.graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
            let sample = try backend.execute(graph, inputs: inputs.bindings).outputs[0]
            #expect(relativeError(actual: sample.floats(), expected: expected.doubles()) <= 1e-4, "scale \(scale)")
        }
    }
}
