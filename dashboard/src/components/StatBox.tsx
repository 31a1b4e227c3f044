interface Props {
  testId?: string;
  label: string;
  value: string;
  unit?: string;
  sub?: string;
  tone?: 'ok' | 'warn' | 'crit' | 'neutral';
}

/** A fixed-size stat box: the value uses tabular numerals so it never shifts the layout. */
export function StatBox({ testId, label, value, unit, sub, tone = 'neutral' }: Props) {
  return (
    <div className={`stat stat-${tone}`} data-testid={testId}>
      <div className="stat-label">{label}</div>
      <div className="stat-value">
        <span className="num">{value}</span>
        {unit && <span className="stat-unit">{unit}</span>}
      </div>
      <div className="stat-sub">{sub ?? '\u00a0'}</div>
    </div>
  );
}
