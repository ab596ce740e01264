import Testing
@testable import LoRAFuse
@testable import LoRAFuseRetrieval

@Suite struct StrictJSONTests {
    func parse(_ text: String) throws -> JSONValue { try StrictJSONParser.parse(Array(text.utf8)) }

    @Test func parsesNestedValuesKeepingOrderAndExactIntegers() throws {
        let value = try parse(#" {"b": [1, 2.5e3, -0], "a": {"x": "\u00e9\ud83d\ude00\n"}, "c": 18446744073709551617, "d": null, "e": true} "#)
        guard case let .object(members) = value else { Issue.record("not an object"); return }
        #expect(members.map(\.0) == ["b", "a", "c", "d", "e"])
        #expect(members[2].1 == .number("18446744073709551617"))
        #expect(members[1].1 == .object([("x", .string("é😀\n"))]))
        #expect(JSONValue.number("18446744073709551617").nonNegativeInteger == nil)
        #expect(JSONValue.number("12").nonNegativeInteger == 12)
        #expect(JSONValue.number("1.0").nonNegativeInteger == nil)
        #expect(JSONValue.number("-1").nonNegativeInteger == nil)
    }

    @Test(arguments: [
        "", "{", "{\"a\":1,}", "[1 2]", "{\"a\":1}x", "{'a':1}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":-}",
        "{\"a\":\"\u{01}\"}", "{\"a\":\"\\x\"}", "{\"a\":\"\\ud800\"}", "{\"a\":1,\"a\":2}", "tru", "nul",
        String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000),
    ])
    func rejectsMalformedInput(_ text: String) {
        #expect(throws: JSONParseError.self) { try parse(text) }
    }

    @Test func rejectsInvalidUTF8InStrings() {
        #expect(throws: JSONParseError.self) { try StrictJSONParser.parse([0x22, 0xFF, 0xFE, 0x22]) }
    }

    @Test func quotingRoundTrips() throws {
        let text = "quote\" backslash\\ newline\n tab\t bell\u{07} é"
        #expect(try parse(jsonQuoted(text)) == .string(text))
    }
}
