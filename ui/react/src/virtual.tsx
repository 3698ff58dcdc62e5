import { useCallback, useLayoutEffect, useRef, useState, type ReactNode, type UIEvent } from "react";

export interface VirtualListProps<T> {
  items: T[];
  itemKey: (item: T) => string;
  render: (item: T) => ReactNode;
  /** Height a row is assumed to have until it is measured. */
  estimate?: number;
  /** Rows rendered beyond the viewport on each side. */
  overscan?: number;
  /** Called when the user scrolls to the top (load older rows). */
  onTop?: () => Promise<void> | void;
  /** Keep the view at the bottom while it is there and rows are added (a chat log). */
  stickToBottom?: boolean;
  label: string;
  className?: string;
}

/**
 * A vertical list that renders only the rows in (and near) the viewport: rows are measured once
 * rendered, unmeasured rows count as `estimate`, and spacers stand for the rows not rendered.
 * Rows added above the first one (an older page) keep what the user sees in place.
 */
export function VirtualList<T>({ items, itemKey, render, estimate = 72, overscan = 8, onTop, stickToBottom = true, label, className }: VirtualListProps<T>) {
  const box = useRef<HTMLDivElement>(null);
  const heights = useRef(new Map<string, number>());
  const [view, setView] = useState({ top: 0, height: 0 });
  const atBottom = useRef(true);
  const firstKey = useRef<string | undefined>(undefined);
  const anchor = useRef<{ key: string; offset: number } | null>(null);
  const [, remeasured] = useState(0);

  const keys = items.map(itemKey);
  const offsets: number[] = [];
  let total = 0;
  for (const k of keys) {
    offsets.push(total);
    total += heights.current.get(k) ?? estimate;
  }
  const viewport = view.height || 800; // not laid out yet (or a test DOM): a screenful
  // following the bottom: render the last screenful (the scroll position follows after layout)
  const top = stickToBottom && atBottom.current ? Math.max(0, total - viewport) : view.top;
  let start = 0;
  while (start < keys.length - 1 && (offsets[start + 1] ?? 0) <= top) start++;
  let end = start;
  while (end < keys.length && (offsets[end] ?? 0) < top + viewport) end++;
  start = Math.max(0, start - overscan);
  end = Math.min(keys.length, end + overscan);

  // measure the rendered rows; keep the anchor row where it was when older rows were prepended
  useLayoutEffect(() => {
    const el = box.current;
    if (!el) return;
    let changed = false;
    for (const row of el.querySelectorAll<HTMLElement>("[data-key]")) {
      const k = row.dataset.key as string;
      const h = row.getBoundingClientRect().height;
      if (h > 0 && heights.current.get(k) !== h) {
        heights.current.set(k, h);
        changed = true;
      }
    }
    if (changed) remeasured((n) => n + 1);
    const first = keys[0];
    if (anchor.current && first !== firstKey.current) {
      const i = keys.indexOf(anchor.current.key);
      if (i >= 0) el.scrollTop = (offsets[i] ?? 0) - anchor.current.offset;
      anchor.current = null;
    } else if (stickToBottom && atBottom.current) {
      el.scrollTop = el.scrollHeight;
    }
    firstKey.current = first;
  });

  const onScroll = useCallback(
    (e: UIEvent<HTMLDivElement>) => {
      const el = e.currentTarget;
      atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
      setView({ top: el.scrollTop, height: el.clientHeight });
      if (el.scrollTop < 40 && onTop && keys.length && anchor.current === null) {
        const i = Math.max(0, keys.findIndex((_, j) => (offsets[j + 1] ?? Infinity) > el.scrollTop));
        const mark = { key: keys[i] as string, offset: (offsets[i] ?? 0) - el.scrollTop };
        anchor.current = mark;
        // no older rows came (the start, or a failed load): let a later scroll ask again
        void Promise.resolve(onTop()).catch(() => {}).finally(() => setTimeout(() => anchor.current === mark && (anchor.current = null), 250));
      }
    },
    [onTop, keys, offsets],
  );

  useLayoutEffect(() => {
    const el = box.current;
    if (el) setView({ top: el.scrollTop, height: el.clientHeight });
  }, []);

  return (
    <div ref={box} className={className} role="log" aria-label={label} tabIndex={0} onScroll={onScroll} style={{ overflowY: "auto" }}>
      <div style={{ height: offsets[start] ?? 0 }} aria-hidden="true" />
      <ul className="caas-rows">
        {items.slice(start, end).map((item, i) => (
          <li key={keys[start + i]} data-key={keys[start + i]}>
            {render(item)}
          </li>
        ))}
      </ul>
      <div style={{ height: total - (offsets[end] ?? total) }} aria-hidden="true" />
    </div>
  );
}
