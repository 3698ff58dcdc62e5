import { describe, expect, it } from "vitest";
import { fireEvent, render, screen } from "@testing-library/react";
import { VirtualList } from "../src/index.js";

describe("VirtualList", () => {
  it("renders only the rows near the viewport of a long list", () => {
    const items = Array.from({ length: 2000 }, (_, i) => `row ${i}`);
    render(<VirtualList label="Rows" items={items} itemKey={(s) => s} render={(s) => <span>{s}</span>} stickToBottom={false} />);
    const rows = screen.getByRole("log", { name: "Rows" }).querySelectorAll("li");
    expect(rows.length).toBeGreaterThan(5);
    expect(rows.length).toBeLessThan(60);
    expect(screen.getByText("row 0")).toBeTruthy();
    expect(screen.queryByText("row 1999")).toBeNull();
  });

  it("asks for older rows when scrolled to the top, and is focusable for keyboard scrolling", () => {
    let asked = 0;
    render(<VirtualList label="Rows" items={["a", "b"]} itemKey={(s) => s} render={(s) => <span>{s}</span>} onTop={() => void asked++} />);
    const log = screen.getByRole("log", { name: "Rows" });
    expect(log.tabIndex).toBe(0);
    fireEvent.scroll(log);
    expect(asked).toBe(1);
  });
});
