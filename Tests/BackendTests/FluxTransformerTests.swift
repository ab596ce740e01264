import Foundation
import Testing
import LoRAFuse

/// The FLUX transformer against diffusers run in float64 (Tools/reference/make_flux_fixtures.py).
@Suite(.serialized) struct FluxTransformerTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/flux")
    static let names = ["dev-tiny", "schnell-tiny", "dev-wide"]

    static func load(_ name: String) throws -> (FluxModel, FluxInputs, HostTensor) {
        let folder = fixtures.appendingPathComponent(name)
        let model = try FluxModel.load(path: folder.path)
        let inputs = try FluxInputs(SafeTensorsFile(path: folder.appendingPathComponent("inputs.safetensors").path).allTensors(),
                                    config: model.config)
        let expected = try SafeTensorsFile(path: folder.appendingPathComponent("expected.safetensors").path).tensor(named: "sample")
        return (model, inputs, expected)
    }

    @Test(arguments: names)
    func matchesDiffusersInFloat64(_ name: String) throws {
        let (model, inputs, expected) = try Self.load(name)
        let graph = try FluxTransformer(model: model).graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
        for backend in BackendsUnderTest.all {
            let sample = try backend.execute(graph, inputs: inputs.bindings).outputs[0]
            #expect(sample.shape == expected.shape)
            let error = relativeError(actual: sample.floats(), expected: expected.doubles())
            print("flux \(name) \(BackendsUnderTest.label(backend)) relative error \(error)")
            #expect(error <= 1e-4, "\(name) on \(BackendsUnderTest.label(backend)): relative error \(error)")
        }
    }
}
