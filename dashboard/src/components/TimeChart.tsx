import { useEffect, useRef } from 'react';
import uPlot from 'uplot';
import { fmtClock } from '../stream/format';
import type { ChartData } from '../stream/view';

export interface SeriesDef {
  label: string;
  /** CSS custom property holding the colour, e.g. `--c1`. */
  colorVar: string;
  dash?: number[];
}

interface Props {
  testId: string;
  title: string;
  /** Unit shown in the title and after legend values. */
  unit: string;
  series: SeriesDef[];
  data: ChartData;
  theme: string;
  height: number;
  /** Formats a y value (axis and legend). */
  format?: (v: number) => string;
  /** Lower bound of the y axis (default 0). */
  yMin?: number;
  /** Fixed upper bound of the y axis (default: data max + 10%). */
  yMax?: number;
  /** Text shown while there is no data. */
  emptyText?: string;
}

const defaultFormat = (v: number): string => {
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (a >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  if (a >= 100 || Number.isInteger(v)) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
};

function toAligned(d: ChartData): uPlot.AlignedData {
  return [d.xs, ...d.ys] as uPlot.AlignedData;
}

/** When the cursor is not over the plot, the legend shows the newest values. */
function showLatest(u: uPlot): void {
  if (u.cursor.idx != null) return;
  const n = u.data[0]?.length ?? 0;
  if (n > 0) u.setLegend({ idx: n - 1 }, false);
}

const pad2 = (n: number) => String(n).padStart(2, '0');

/** 24-hour tick labels; seconds only when ticks are less than a minute apart. */
function timeTicks(_u: uPlot, splits: number[]): string[] {
  const step = splits.length > 1 ? (splits[1] as number) - (splits[0] as number) : 60;
  return splits.map((v) => {
    const d = new Date(v * 1000);
    const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    return step < 60 ? `${hm}:${pad2(d.getSeconds())}` : hm;
  });
}

/**
 * A uPlot time-series chart with a fixed height. The plot is created once per
 * theme/series layout and then only fed new data, so updates are cheap.
 */
export function TimeChart({ testId, title, unit, series, data, theme, height, format = defaultFormat, yMin = 0, yMax, emptyText = 'Waiting for data…' }: Props) {
  const plotEl = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const latest = useRef({ data, format });
  const seriesKey = series.map((s) => `${s.label}|${s.colorVar}|${s.dash?.join(',') ?? ''}`).join(';');

  useEffect(() => {
    latest.current = { data, format };
    const u = plot.current;
    if (u) {
      u.setData(toAligned(data), false);
      const r = data.xRange;
      if (r) u.setScale('x', { min: r[0], max: r[1] });
      else u.redraw(true, true);
      showLatest(u);
    }
  }, [data, format]);

  useEffect(() => {
    const el = plotEl.current;
    if (!el) return;
    const css = getComputedStyle(document.documentElement);
    const cssVar = (name: string, fallback: string) => css.getPropertyValue(name).trim() || fallback;
    const axisColor = cssVar('--muted', '#888');
    const gridColor = cssVar('--grid', 'rgba(128,128,128,0.2)');
    const font = `${Math.round(parseFloat(getComputedStyle(el).fontSize) * 0.85) || 11}px system-ui, sans-serif`;
    const fmt = (v: number) => latest.current.format(v);
    const defs = seriesKey.split(';').map((s) => s.split('|'));
    const opts: uPlot.Options = {
      width: Math.max(160, el.clientWidth),
      height,
      legend: { show: true, live: true },
      hooks: { setCursor: [showLatest], ready: [showLatest] },
      cursor: { drag: { x: false, y: false, setScale: false }, points: { size: 6 } },
      scales: {
        x: {
          time: true,
          range: (_u, min, max) => latest.current.data.xRange ?? [min, max],
        },
        y: {
          range: (_u, min, max) => {
            const lo = Math.min(yMin, Number.isFinite(min) ? min : yMin);
            if (yMax !== undefined) return [lo, Math.max(yMax, Number.isFinite(max) ? max : yMax)];
            const hi = Number.isFinite(max) && max > lo ? max + (max - lo) * 0.1 : lo + 1;
            return [lo, hi];
          },
        },
      },
      axes: [
        { stroke: axisColor, font, grid: { stroke: gridColor, width: 1 }, ticks: { stroke: gridColor, width: 1 }, values: timeTicks, space: 60 },
        {
          stroke: axisColor,
          font,
          size: 56,
          grid: { stroke: gridColor, width: 1 },
          ticks: { stroke: gridColor, width: 1 },
          values: (_u, splits) => splits.map((v) => (v == null ? '' : `${fmt(v)}${unit === '%' ? '%' : ''}`)),
        },
      ],
      series: [
        { value: (_u, v) => (v == null ? '—' : fmtClock(v * 1000)) },
        ...defs.map(([label = '', colorVar = '--c1', dash = '']) => ({
          label,
          stroke: cssVar(colorVar, '#3b82f6'),
          width: 2,
          dash: dash ? dash.split(',').map(Number) : undefined,
          spanGaps: false,
          value: (_u: uPlot, v: number | null) => (v == null ? '—' : `${fmt(v)}${unit === '%' || unit.startsWith('/') ? unit : unit ? ` ${unit}` : ''}`),
        })),
      ],
    };
    const u = new uPlot(opts, toAligned(latest.current.data), el);
    plot.current = u;
    const ro = new ResizeObserver(() => {
      const w = Math.max(160, el.clientWidth);
      if (w !== u.width) u.setSize({ width: w, height });
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, [seriesKey, theme, height, unit, yMin, yMax]);

  return (
    <figure className="chart" data-testid={testId} data-points={data.points} data-span={data.span}>
      <figcaption className="chart-title">
        <span>{title}</span>
        <span className="chart-unit">{unit}</span>
      </figcaption>
      <div className="chart-body" style={{ minHeight: height }}>
        <div ref={plotEl} className="chart-plot" />
        {data.points === 0 && (
          <div className="chart-empty" style={{ height }}>
            {emptyText}
          </div>
        )}
      </div>
    </figure>
  );
}
