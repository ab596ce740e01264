import Testing
@testable import LoRAFuse
@testable import LoRAFuseModels
@testable import LoRAFuseFusion
@testable import LoRAFuseRetrieval
@testable import LoRAFuseVerification
@testable import LoRAFuseToyWorld

@Suite struct GraphTests {
    @Test func shapeMismatchesNameTheOpAndBothShapes() throws {
        var graph = Graph()
        let a = graph.input("a", [7, 33])
        let b = graph.input("b", [32, 5])
        #expect(throws: GraphError(op: "matmul", "inner dimensions differ: a [7, 33] has K=33, b [32, 5] has K=32")) {
            try graph.matmul(a, b)
        }
        #expect(throws: GraphError(op: "add", "shapes [7, 33] and [32, 5] do not broadcast")) { try graph.add(a, b) }
        let x = graph.input("x", [2, 7, 3, 8])
        let cos = graph.input("cos", [7, 3])
        #expect(throws: GraphError.self) { try graph.rotaryEmbedding(x, cos: cos, sin: cos) }
        #expect(throws: GraphError.self) { try graph.reshape(a, [8, 33]) }
        #expect(throws: GraphError.self) { try graph.permute(a, [0, 0]) }
        #expect(throws: GraphError.self) { try graph.slice(a, axis: 1, start: 3, end: 40) }
        #expect(throws: GraphError.self) { try graph.concat([a, b], axis: 0) }
        let half = graph.input("h", [7, 33], .float16)
        #expect(throws: GraphError(op: "add", "lhs must be F32, got F16[7, 33] (cast it first)")) { try graph.add(half, a) }
        #expect(throws: GraphError.self) { try graph.layerNorm(a, weight: graph.input("w", [32]), bias: graph.input("bb", [32])) }
    }

    @Test func shapesAreInferred() throws {
        var graph = Graph()
        let a = graph.input("a", [2, 1, 7, 9])
        let b = graph.input("b", [3, 9, 5])
        #expect(try graph.matmul(a, b).shape == [2, 3, 7, 5])
        let w = graph.input("w", [11, 9], .bfloat16)
        #expect(try graph.linear(a, weight: w).shape == [2, 1, 7, 11])
        let q = graph.input("q", [2, 7, 3, 16]), k = graph.input("k", [2, 33, 3, 16])
        #expect(try graph.attention(query: q, key: k, value: k).shape == [2, 7, 3, 16])
        #expect(try graph.concat([a, a], axis: -1).shape == [2, 1, 7, 18])
        let ids = graph.input("ids", [2, 5], .int64)
        #expect(try graph.embedding(table: w, ids: ids).shape == [2, 5, 9])
        #expect(graph.inputTypes.count == 6)
    }
}
